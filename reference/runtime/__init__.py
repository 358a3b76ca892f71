"""The runtime: reference/'s maths arranged for speed, and model files turned into models.

Read reference/ first (reference/__init__.py gives the order): nothing here changes what is
computed, and the tests hold each module here to the maths module it speeds up. The modules, each
building on those above it:

    memory.py          float32 weights copied out of the file into huge-page memory; the KV
                       cache's memory, resident as positions are written
    blockwise.py       weight matrices as products use them: float32, or quantized blocks
                       multiplied a chunk of rows at a time
    fast.py            FastLlama: model.py's forward pass in float32, fused and preallocated
    load.py            a GGUF or llama2.c file -> Llama or FastLlama (`load_model`)
    fast_tokenizer.py  FastTokenizer: tokenizer.py's ids, a word at a time through a cache

Imports NumPy, the standard library, formats/ and reference/'s maths; never torch or trainer/.
"""
