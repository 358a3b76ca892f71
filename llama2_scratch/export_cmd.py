"""`llama2-scratch export CKPT --to gguf|llama2c ...`: ship a checkpoint to llama.cpp or run.c."""

from llama2_scratch.cli import UsageError

HELP = "convert a ckpt.pt (ours or llama2.c's) to GGUF or llama2.c files, then read them back"
GGUF_DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")


def add_arguments(parser):
    parser.add_argument("ckpt", help="a ckpt.pt written by `train` or by llama2.c's train.py")
    parser.add_argument("--to", choices=("gguf", "llama2c"), required=True)
    parser.add_argument("-o", "--output", required=True, help="the model file to write")
    parser.add_argument("--dtype", choices=GGUF_DTYPES, default="f32", help="GGUF matrix type (default: f32)")
    parser.add_argument("--version", type=int, choices=(0, 1, 2), default=1,
                        help="llama2.c file version: 0 legacy, 1 float32, 2 int8 groups (default: 1)")
    parser.add_argument("--tokenizer-out", help="llama2c: also write the vocabulary as tokenizer.bin here")
    parser.add_argument("--tokenizer", help="SentencePiece .model to use instead of the one in the checkpoint")


def run(args):
    from llama2_scratch.model_files import open_checkpoint
    from trainer.export import ExportError, export_gguf, export_llama2c

    if args.to == "gguf" and (args.tokenizer_out or args.version != 1):
        raise UsageError("llama2-scratch export: --version and --tokenizer-out apply to --to llama2c only")
    if args.to == "llama2c" and args.dtype != "f32":
        raise UsageError("llama2-scratch export: --dtype applies to --to gguf (llama2.c: --version 2 for int8)")
    try:
        model = open_checkpoint(args.ckpt).exportable(args.tokenizer)
        if args.to == "gguf":
            report = export_gguf(model, args.dtype, args.output)
            what = f"GGUF {args.dtype}, {report['tensors']} tensors, vocabulary of {len(model.vocab)}"
        else:
            report = export_llama2c(model, args.version, args.output, args.tokenizer_out)
            what = f"llama2.c v{args.version}"
    except ExportError as exc:
        raise UsageError(f"llama2-scratch export: {exc}") from None
    print(f"wrote {args.output} ({what}); read back: largest weight error {report['max_abs_error']:.3g}")
    if args.tokenizer_out:
        print(f"wrote {args.tokenizer_out} (tokenizer.bin)")
    return 0
