"""`llama2-scratch demo`: the whole pipeline on Tiny Shakespeare with CPU-sized defaults."""

HELP = "the whole pipeline on Tiny Shakespeare with CPU-sized defaults"


def add_arguments(parser):
    pass


def run(args):
    print(
        "llama2-scratch demo: the training pipeline (prepare, train-vocab, pretokenize, train,\n"
        "export) is not built yet, so there is nothing to demonstrate end to end.\n"
        "What works today: `llama2-scratch inspect FILE [--json]` on GGUF and llama2.c files, and the\n"
        "formats package (GGUF v3, llama2.c v0/v1/v2 + tokenizer.bin, ggml quantization)."
    )
    return 0
