"""The tokenizers verify compares, each as encode(text) -> ids (BOS/EOS as the vocabulary says).

    sentencepiece  the trained .model with the sentencepiece package (the reference when present):
                   --tokenizer's, the ckpt's, or a Hugging Face folder's tokenizer.model
    numpy          reference/tokenizer.py on MODEL's vocabulary
    llama.cpp      llama.cpp's own, from its backend (parity/backends.py)

They stand apart from the backends: the tokenizer checks run even when a model fails to load, and
sentencepiece needs no torch (a .model passed as --tokenizer).
"""

from formats import detect, spm
from formats.files import read_capped
from models.tokenizers import open_tokenizer
from parity import LLAMA_CPP, NUMPY, SENTENCEPIECE


def sentencepiece_model(tokenizer_path, ckpt_file, model_file):
    """The bytes of the trained SentencePiece .model: --tokenizer when it is one, else the
    ckpt's stored copy, else MODEL's (a Hugging Face folder's tokenizer.model), else None."""
    if tokenizer_path is not None and detect.is_sentencepiece_model(tokenizer_path):
        return read_capped(tokenizer_path, spm.MAX_MODEL_BYTES)
    if ckpt_file is not None and ckpt_file.spm_model:
        return ckpt_file.spm_model
    return model_file.spm_model


def sentencepiece_encoder(spm_bytes, notes):
    """encode(text) -> ids with the trained SentencePiece model (BOS/EOS as our reader of the
    same .model decides: Llama's convention), or None with a note."""
    if not spm_bytes:
        notes.append("no SentencePiece .model (in the ckpt or --tokenizer): tokenizer checks compare "
                     "ours with llama.cpp only")
        return None
    try:
        import sentencepiece
    except ImportError:
        notes.append("sentencepiece is not installed: its tokenizer checks were skipped")
        return None
    processor = sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)
    vocab = spm.from_bytes(spm_bytes, "the checkpoint's tokenizer").vocab
    return lambda text: list(processor.encode(text, add_bos=vocab.add_bos, add_eos=vocab.add_eos))


def our_tokenizer(model_file, tokenizer_path, ckpt_file, notes):
    """reference/tokenizer.py on MODEL's vocabulary (a llama2.c file has none: --tokenizer, else
    the ckpt's), or None with a note when it cannot be built."""
    try:
        if model_file.kind != "llama2c":
            return model_file.tokenizer()
        if tokenizer_path is not None:
            return open_tokenizer(tokenizer_path, model_file.spec.vocab_size)
        if ckpt_file is not None and ckpt_file.vocab is not None:
            return ckpt_file.tokenizer()
    except ValueError as exc:
        notes.append(f"numpy tokenizer: {exc}")
    return None


def encoders(spm_bytes, tokenizer, llama, notes):
    """{name: encode} for the tokenizers there are, the reference (sentencepiece) first; `tokenizer`
    is ours or None, `llama` the llama.cpp backend or None."""
    found = {SENTENCEPIECE: sentencepiece_encoder(spm_bytes, notes),
             NUMPY: tokenizer.encode if tokenizer is not None else None,
             LLAMA_CPP: llama.tokenize if llama is not None else None}
    return {name: encode for name, encode in found.items() if encode is not None}
