"""Hand-written readers and writers for GGUF v3, llama2.c checkpoints and tokenizers, and ggml
quantization. NumPy and the standard library only: no torch, no gguf-py (that is the oracle the
tests check us against)."""

from formats.errors import FormatError

__all__ = ["FormatError"]
