"""The parity report behind `llama2-scratch verify`: does an exported file compute what was trained?

Up to four implementations run the same token ids and are compared pair by pair:

    torch         trainer/model.py on the ckpt.pt weights (the model as trained; needs --ckpt)
    numpy         reference/model.py on MODEL (a GGUF, a llama2.c .bin or a Hugging Face folder, as
                  the file stores it)
    transformers  LlamaForCausalLM on MODEL in float32 (a Hugging Face folder; when transformers
                  is installed)
    llama.cpp     llama-cpp-python on MODEL (a GGUF; needs --llama-cpp)

and up to three tokenizers encode the same prompts:

    sentencepiece  the trained .model (the bytes stored in ckpt.pt, or --tokenizer X.model)
    numpy          reference/tokenizer.py on MODEL's vocabulary (ours; the GGUF's tokenizer.ggml.*)
    llama.cpp      llama.cpp's own tokenizer on MODEL

Checks (each one a row of the report; the JSON document is described in parity/report.py):

    config       torch vs file       hyperparameters in the file = those in the ckpt (GGUF keys named)
    load         per implementation  the file loads at all
    tokenizer/P  sentencepiece vs *  identical ids on prompt P
    logits/P     every pair          max |Δ|, NMSE, KL(ref || cand), top-1 agreement at every position
    greedy/P     every pair          each implementation's own greedy continuation (argmax, lowest id
                                     on ties; up to GREEDY_TOKENS tokens, bounded by the context):
                                     the fraction of tokens identical before the first divergence
                                     (float32 pairs only: a lossy file's near-ties legitimately diverge)

Thresholds depend on the file's dtype and on the pair (parity/thresholds.py, each with the
measurement it came from).

The modules, in the order a run uses them:

    prompts.py     the fixed prompts and the lengths of greedy continuations
    backends.py    one interface over torch, NumPy, transformers and llama.cpp: logits(ids), greedy(ids, n)
    tokenizers.py  the three tokenizers as encode(text) -> ids
    metrics.py     logit metrics and identical prefixes: arrays in, numbers out
    thresholds.py  pass limits per (dtype, pair), as data with their measurements
    checks.py      the rows: config, tokenizer, logits and greedy checks
    report.py      Check, Report, the JSON document and the text table
    run.py         run_verify: open the files, build the implementations, run the prompts

torch, transformers and llama_cpp are imported inside the functions that use them: the package
imports with NumPy alone, so `verify MODEL --llama-cpp` runs without torch.
"""

# The implementations and tokenizers, as the report names them.
TORCH, NUMPY, LLAMA_CPP, SENTENCEPIECE = "torch", "numpy", "llama.cpp", "sentencepiece"
TRANSFORMERS = "transformers"
