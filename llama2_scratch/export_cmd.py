"""`llama2-scratch export MODEL --to gguf|llama2c|hf ...`: ship a model to llama.cpp, run.c or
transformers.

MODEL is usually the ckpt.pt `train` wrote, but any model file converts: a Hugging Face folder
to a GGUF or llama2.c file, a GGUF to a folder, and so on (models/ opens it).
"""

from llama2_scratch.cli import UsageError

HELP = "convert a ckpt.pt (ours or llama2.c's) or any model file to GGUF, llama2.c files or a Hugging Face folder"
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")


def add_arguments(parser):
    parser.add_argument("ckpt", metavar="MODEL", help="a ckpt.pt written by `train` or by llama2.c's train.py; "
                                                      "or a GGUF, a llama2.c .bin or a Hugging Face folder")
    parser.add_argument("--to", choices=("gguf", "llama2c", "hf"), required=True)
    parser.add_argument("-o", "--output", required=True,
                        help="the model file to write (--to hf: the folder, created if absent)")
    parser.add_argument("--dtype", choices=GGUF_DTYPES, default="f32", help="GGUF matrix type (default: f32)")
    parser.add_argument("--version", type=int, choices=(0, 1, 2), default=1,
                        help="llama2.c file version: 0 legacy, 1 float32, 2 int8 groups (default: 1)")
    parser.add_argument("--tokenizer-out", help="llama2c: also write the vocabulary as tokenizer.bin here")
    parser.add_argument("--tokenizer", help="SentencePiece .model to use instead of the one MODEL carries")


def _check_flags(args):
    if args.to != "llama2c" and (args.tokenizer_out or args.version != 1):
        raise UsageError("llama2-scratch export: --version and --tokenizer-out apply to --to llama2c only")
    if args.to != "gguf" and args.dtype != "f32":
        raise UsageError("llama2-scratch export: --dtype applies to --to gguf (llama2.c: --version 2 for int8; "
                         "a Hugging Face folder is float32)")


def run(args):
    from models import open_model
    from trainer.export import ExportError, export_gguf, export_hf, export_llama2c

    _check_flags(args)
    try:
        model = open_model(args.ckpt).exportable(args.tokenizer)
        if args.to == "gguf":
            report = export_gguf(model, args.dtype, args.output)
            what = f"GGUF {args.dtype}, {report['tensors']} tensors, vocabulary of {len(model.vocab)}"
        elif args.to == "hf":
            report = export_hf(model, args.output)
            what = f"Hugging Face folder, float32, {report['tensors']} tensors"
        else:
            report = export_llama2c(model, args.version, args.output, args.tokenizer_out)
            what = f"llama2.c v{args.version}"
    except ExportError as exc:
        # Name the source unless the message already starts with a file it names.
        text = str(exc)
        if not text.startswith((str(args.ckpt), str(args.output), str(args.tokenizer_out))):
            text = f"{args.ckpt}: {text}"
        raise UsageError(f"llama2-scratch export: {text}") from None
    print(f"wrote {args.output} ({what}); read back: largest weight error {report['max_abs_error']:.3g}")
    if args.tokenizer_out:
        print(f"wrote {args.tokenizer_out} (tokenizer.bin)")
    return 0
