"""SentencePiece models trained in memory, and the Thai lines of the shared data they are trained on."""

import io

import sentencepiece as spm


USER_DEFINED = ["\n", "ครับ", "555"]


def train_bpe(lines, **options):
    """A small SentencePiece BPE model trained in memory; returns the .model bytes."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, model_type="bpe", vocab_size=1000,
        byte_fallback=True, normalization_rule_name="identity", character_coverage=0.9995,
        hard_vocab_limit=False, num_threads=1, minloglevel=2, **options)
    return out.getvalue()


def thai_lines(shared_data, name="pos"):
    return (shared_data / "thai" / f"wisesight-{name}.txt").read_text(encoding="utf-8").split("\n")
