"""The runtime: reference/'s maths arranged for speed, and model files turned into models.

Read reference/ first (reference/__init__.py gives the order): nothing here changes what is
computed, and the tests hold each module here to the maths module it speeds up. The modules, each
building on those above it:

    memory.py          float32 weights copied out of the file into huge-page memory; the KV
                       cache's memory, resident as positions are written
    blockwise.py       the kernels: float32 products, and int8 codes times block scales (every
                       quantized type) multiplied a chunk of rows at a time
    packing.py         several matrices made one for one product (wq | wk | wv, w1 | w3)
    blas.py            BLAS on one thread for a while (its own threads spin on our cores)
    affinity.py        the executor's threads each held to a CPU of its own during a pass
    helpers.py         helper processes sharing a one-token pass's products (Linux)
    executor.py        Executor: threads, helpers, pinning, BLAS threading and the row split
    fast.py            FastLlama: model.py's forward pass in float32, fused and preallocated
    load.py            a parsed GGUF or llama2.c file -> Llama or FastLlama (models.load_model opens a path)
    fast_tokenizer.py  FastTokenizer: tokenizer.py's ids, a word at a time through a cache

What the fast path holds per weight (blockwise.Int8BlockMatrix): an int8 code, a float32 scale
per group and, where the type's record (formats/quants/record.py) declares mins, a float32 min
per group; float32, F16 and BF16 matrices are held as float32. docs/formats.md's type table
gives it per type, against the file's bytes per weight.

The price of one kernel for every type: a one-token product casts int8 codes to float32, the
one operation NumPy has for integer weights, so codes narrower than a byte would have to be
unpacked at every token first (the slow path this replaced ran at a tenth of Q8_0's speed).

Imports NumPy, the standard library, formats/ and reference/'s maths; never torch or trainer/.
"""
