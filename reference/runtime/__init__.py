"""The runtime: reference/'s maths arranged for speed, and model files turned into models.

Read reference/ first (reference/__init__.py gives the order): nothing here changes what is
computed, and the tests hold each module here to the maths module it speeds up. The modules, each
building on those above it:

    memory.py          float32 weights copied out of the file into huge-page memory; the KV
                       cache's memory, resident as positions are written
    blockwise.py       weight matrices as products use them: float32, or int8 codes times
                       block scales (every quantized type) multiplied a chunk of rows at a time
    blas.py            BLAS on one thread for a while (its own threads spin on our cores)
    affinity.py        fast.py's threads each held to a CPU of its own during a pass
    fast.py            FastLlama: model.py's forward pass in float32, fused and preallocated
    load.py            a GGUF or llama2.c file -> Llama or FastLlama (`load_model`)
    fast_tokenizer.py  FastTokenizer: tokenizer.py's ids, a word at a time through a cache

What the fast path holds per weight (blockwise.Int8BlockMatrix: an int8 code, plus a float32
scale per group and, for Q4_1, Q5_1, Q2_K, Q4_K and Q5_K, a float32 min per group), against the
file's bytes per weight; float32 and F16/BF16 matrices are held as float32 (4 bytes):

    type     group  file B/w  held B/w  held/file      type     group  file B/w  held B/w  held/file
    Q8_0       32    1.0625    1.125      1.06x        IQ4_NL     32    0.5625    1.125      2.00x
    Q6_K       16    0.8203    1.250      1.52x        IQ4_XS     32    0.5312    1.125      2.12x
    Q5_1       32    0.7500    1.250      1.67x        MXFP4      32    0.5312    1.125      2.12x
    Q5_K       32    0.6875    1.250      1.82x        NVFP4      16    0.5625    1.250      2.22x
    Q5_0       32    0.6875    1.125      1.64x        IQ3_S      32    0.4297    1.125      2.62x
    Q4_1       32    0.6250    1.250      2.00x        IQ3_XXS    32    0.3828    1.125      2.94x
    Q4_K       32    0.5625    1.250      2.22x        IQ2_S      16    0.3203    1.250      3.90x
    Q4_0       32    0.5625    1.125      2.00x        IQ2_XS     16    0.2891    1.250      4.32x
    Q3_K       16    0.4297    1.250      2.91x        IQ2_XXS    32    0.2578    1.125      4.36x
    Q2_K       16    0.3281    1.500      4.57x        IQ1_M      16    0.2188    1.250      5.71x
    TQ2_0     256    0.2578    1.016      3.94x        IQ1_S      32    0.1953    1.125      5.76x
    TQ1_0     256    0.2109    1.016      4.81x

The price of one kernel for every type: a one-token product casts int8 codes to float32, the
one operation NumPy has for integer weights, so codes narrower than a byte would have to be
unpacked at every token first (the slow path this replaced ran at a tenth of Q8_0's speed).

Imports NumPy, the standard library, formats/ and reference/'s maths; never torch or trainer/.
"""
