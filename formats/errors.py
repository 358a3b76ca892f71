"""The one exception every reader in `formats/` raises on bad input.

A reader never lets an IndexError, struct.error, UnicodeDecodeError or MemoryError escape: each
check names the file, the field being read and the byte offset where it starts, so the CLI can
print one line and exit with status 2.
"""


class FormatError(ValueError):
    """A file is not a well-formed instance of its format.

    `field` names what was being read (e.g. "kv[3].value", "tensor_info[0].ne[1]"), `offset` is the
    byte offset in the file where that field starts (None when it is not tied to one place).
    """

    def __init__(self, path, field, offset, message):
        self.path = str(path)
        self.field = field
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{self.path}: {field}{where}: {message}")
