"""`llama2-scratch tokenize MODEL_OR_TOKENIZER TEXT [--json]`: token ids and pieces of TEXT."""

import json
import sys

from models.tokenizers import dummy_prefix_warning, open_tokenizer

HELP = "print the token ids and pieces of a text"


def add_arguments(parser):
    parser.add_argument("tokenizer", metavar="MODEL_OR_TOKENIZER",
                        help="a GGUF, ckpt.pt or Hugging Face folder (tokenizer inside), a SentencePiece .model "
                             "or a llama2.c tokenizer.bin")
    parser.add_argument("text", help="the text to encode")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="pieces in a tokenizer.bin (default: all pieces up to the end of the file)")
    parser.add_argument("--json", action="store_true", help='print {"ids": [...], "pieces": [...]}')


def run(args):
    tokenizer = open_tokenizer(args.tokenizer, args.vocab_size)
    warning = dummy_prefix_warning(None, args.tokenizer, tokenizer.vocab)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    ids = tokenizer.encode(args.text)
    pieces = [tokenizer.vocab.pieces[i] for i in ids]
    if args.json:
        print(json.dumps({"ids": ids, "pieces": pieces}, ensure_ascii=False))
    else:
        for i, piece in zip(ids, pieces):
            print(f"{i:>8}  {piece!r}")
    return 0
