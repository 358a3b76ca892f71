"""Models: what kind a path holds and the one way to open it, for parity/, bench/ and the commands.

    kinds.py       Kind (gguf, llama2c, ckpt, hf) and detect(path): the kind from a file's first
                   bytes (a folder: Hugging Face), FormatError naming what was tried for none
    files.py       open_model(path) -> ModelFile (GGUFModel, Llama2cModel, CkptModel, HFModel):
                   the parsed file, its spec, weights, vocabulary; load_model(path) -> the NumPy model
    tokenizers.py  the model's tokenizer (its own or --tokenizer's) and the dummy-prefix warning

Import order: formats -> reference -> trainer -> models -> parity -> commands (llama2_scratch/).
reference/ reads parsed files (reference/runtime/load.py builds a model from their weights);
this package picks the reader. A ckpt.pt is read through trainer/, so it needs torch; nothing
else here does.
"""

from models.files import ModelFile, load_model, open_checkpoint, open_model
from models.kinds import Kind, detect

__all__ = ["Kind", "ModelFile", "detect", "load_model", "open_checkpoint", "open_model"]
