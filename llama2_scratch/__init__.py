"""The `llama2-scratch` command line; `llama2_scratch.load_model(path, dtype=numpy.float32)` is the
Python entry (models.load_model: the NumPy model in any MODEL the commands read)."""

from models import load_model

__all__ = ["load_model"]
