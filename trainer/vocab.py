"""Train a SentencePiece BPE vocabulary (llama2.c's custom-vocab settings) and measure it.

Settings, and why (also in docs/formats.md, "Training a SentencePiece vocabulary"):
- BPE, byte_fallback, character_coverage 1.0: every character is either a piece or its UTF-8
  bytes (<0xXX>), so nothing maps to <unk> and Thai works.
- identity normalization with remove_extra_whitespaces=False: decode(encode(x)) == x, runs of
  spaces and trailing spaces included (the default would silently squeeze them).
- split_digits, allow_whitespace_only_pieces; unk/bos/eos = 0/1/2, no pad (Llama 2's ids).
- Newlines: the trainer reads its input line by line, so "\\n" never becomes a merged piece; we
  accept that, as Llama 2 does: a newline is the byte piece <0x0A>, one token, and every
  implementation of byte fallback (run.c, llama.cpp, ours) round-trips it. The byte-fallback rate
  we report therefore leaves <0x0A> out, so that it measures characters the vocabulary lacks.
- add_dummy_prefix=False: documents are encoded whole, so a word after a newline has no space
  before it; with the dummy prefix the trainer would see every line start with "▁" and learn
  pieces ("▁First") that the encoded stream never contains ("<0x0A>First"). Without it the
  training lines and the encoded stream agree and the tokenizer is lossless. The flag is stored in
  the .model (and in GGUF as add_space_prefix); llama2.c's run.c always adds the prefix to a
  prompt, which costs it nothing but a leading space token.
"""

import os
import tempfile
from pathlib import Path

from data.paths import DataError

NEWLINE_BYTE_PIECE = "<0x0A>"
MIN_VOCAB_SIZE = 3 + 256 + 1     # unk/bos/eos, 256 byte pieces, at least one learned piece


def trainer_options(vocab_size):
    """The keyword arguments given to sentencepiece.SentencePieceTrainer.train."""
    return dict(
        model_type="bpe", vocab_size=vocab_size, byte_fallback=True, character_coverage=1.0,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        split_digits=True, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, unk_surface=" \u2047 ",
        input_format="text", max_sentence_length=1 << 16, shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1, minloglevel=2,
    )


def train_vocab(documents, model_path, vocab_size):
    """Train on `documents` (strings) and write `model_path` (.model, plus .vocab beside it)."""
    import sentencepiece as spm

    if vocab_size < MIN_VOCAB_SIZE:
        raise DataError(f"--vocab-size {vocab_size} is too small: byte fallback alone needs "
                        f"{MIN_VOCAB_SIZE - 1} pieces")
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(documents) + "\n", encoding="utf-8")
        prefix = Path(tmp) / "model"
        try:
            spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix),
                                           **trainer_options(vocab_size))
        except RuntimeError as exc:
            # e.g. "Vocabulary size is too high" for a tiny corpus: say so in one line.
            raise DataError(f"sentencepiece could not train a {vocab_size}-piece vocabulary: "
                            f"{str(exc).splitlines()[-1]}") from None
        # Move into place only once training succeeded, so a failed run leaves no half model.
        os.replace(f"{prefix}.model", model_path)
        os.replace(f"{prefix}.vocab", model_path.with_suffix(".vocab"))
    return model_path


def measure(model_path, documents):
    """{"chars_per_token", "byte_fallback_rate", ...} of the tokenizer over `documents`.

    byte_fallback_rate is the fraction of tokens that are byte pieces other than <0x0A> (see the
    module docstring); tokens counts the text only, not BOS/EOS.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    newline = sp.piece_to_id(NEWLINE_BYTE_PIECE)
    byte_ids = {i for i in range(sp.get_piece_size()) if sp.is_byte(i) and i != newline}
    tokens = chars = fallback = 0
    for ids, doc in zip(sp.encode(documents), documents):
        tokens += len(ids)
        chars += len(doc)
        fallback += sum(1 for i in ids if i in byte_ids)
    return {"documents": len(documents), "chars": chars, "tokens": tokens,
            "chars_per_token": chars / max(tokens, 1), "byte_fallback_rate": fallback / max(tokens, 1)}
