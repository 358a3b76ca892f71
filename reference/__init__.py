"""Llama 2 inference in NumPy, written to be read: the maths here, the runtime in reference/runtime/.

The maths, in reading order; each module gives its formula and shapes and uses only those above it:

    1. rmsnorm.py     RMSNorm: x / sqrt(mean(x²) + eps) * weight
    2. rope.py        rotary position embedding on adjacent pairs
    3. attention.py   causal grouped-query attention, softmax(q kᵀ / sqrt(hd) + mask) v
    4. swiglu.py      the feed-forward network, w2 (silu(w1 x) ⊙ w3 x)
    5. model.py       the forward pass: embeddings, the blocks, the KV cache, the logits
    6. sampling.py    logits -> the next token: temperature, top-k, top-p, min-p, penalty
    7. generate.py    the loop: prefill the prompt, then sample and decode a token at a time
    8. tokenizer.py   text <-> ids: SentencePiece's BPE, one merge at a time (stands alone)

reference/runtime/ computes the same things fast (FastLlama, FastTokenizer) and turns GGUF and
llama2.c files into models; read it after the maths, next to the module it speeds up. The tests
hold each runtime module to its maths module. Nothing in reference/ imports torch or trainer/:
NumPy, the standard library and formats/ only.
"""
