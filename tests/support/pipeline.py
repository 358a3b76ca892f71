"""A tiny prepared + tokenized dataset for the training and export tests (built under tmp dirs).

The corpus is the first TEXT_CHARS characters of Tiny Shakespeare (the `shared_data` folder), prepared
as the `text` dataset, with a VOCAB_SIZE-piece vocabulary: small enough that sentencepiece
trains in well under a second and the models below take milliseconds per step.
"""

from data.prepare import prepare, read_documents
from data.paths import token_dir, vocab_model_path
from trainer.config import from_settings
from trainer.pretokenize import pretokenize
from trainer.vocab import train_vocab

TEXT_CHARS = 60_000
VOCAB_SIZE = 384
# A model of a few thousand parameters: fast on 2 shared cores, still a real Llama 2.
TINY_MODEL = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32, batch_size=4)


def build_dataset(shared_data, root):
    """Prepare, train a vocabulary and pretokenize under `root`; returns the data dir."""
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:TEXT_CHARS]
    source = root / "shakespeare.txt"
    source.write_text(text, encoding="utf-8")
    data_dir = root / "data"
    prepare("text", source, data_dir)
    model = train_vocab(read_documents(data_dir / "text" / "train.jsonl"),
                        vocab_model_path(data_dir, "text", VOCAB_SIZE), VOCAB_SIZE)
    pretokenize(data_dir, "text", model, token_dir(data_dir, "text", f"tok{VOCAB_SIZE}"))
    return data_dir


def tiny_config(data_dir, out_dir, **overrides):
    settings = dict(TINY_MODEL, dataset="text", vocab_size=VOCAB_SIZE, data_dir=str(data_dir),
                    out_dir=str(out_dir), max_iters=8, warmup_iters=2, learning_rate=3e-3,
                    eval_interval=1000, eval_batches=4, log_interval=1000, device="cpu", seed=7,
                    # not auto: it times the machine, and runs that tests compare must train alike
                    dtype="float32")
    settings.update(overrides)
    return from_settings(settings)
