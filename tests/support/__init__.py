"""What the tests share, by topic; no test module imports another.

- cli: the CLI, or any Python, in a child process.
- files: small vocabularies, files through the project's writers, GGUF bytes by hand.
- weights: random llama2.c-named weights, one function per distribution (bench/ draws from it too).
- models: the torch model holding given weights; hypothesis' small model shapes.
- compare: bits, ulps, relative error; the fast path's logits tolerance.
- quant: ggml block scales, random blocks, gguf-py's dequantize as the oracle.
- ggml_c: llama.cpp's C (dequantize_row_*, llama_model_quantize) and the files it quantizes.
- tokenizer: SentencePiece models trained in memory.
- study: the spec's recorded points and a float64 forward pass that recomputes them.
- pipeline: the tiny training dataset and config.
- verify: the models the verify tests check.
- fuzz: the fuzz kinds, their readers and valid files; crafted: the hostile cases, per format.
"""
