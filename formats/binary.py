"""Bounds-checked little-endian reading over a memory-mapped file.

Every reader in `formats/` walks its file with a `Cursor`: each read names the field it is
reading, and a read that would pass the end of the file raises `FormatError` with that field and
the byte offset instead of an IndexError, a struct.error or a short read. Array reads are views
into the mapping (zero-copy), so a reader never allocates more than the file justifies.
"""

import os
import struct

import numpy as np

from formats.errors import FormatError
from formats.files import open_regular

_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")


def map_file(path):
    """Map `path` read-only as a uint8 array (an empty file maps to an empty array); anything but
    a regular file is refused before it is opened for reading (formats.files.open_regular)."""
    with open_regular(path) as f:
        try:
            if os.fstat(f.fileno()).st_size == 0:
                return np.zeros(0, dtype=np.uint8)
            return np.memmap(f, dtype=np.uint8, mode="r")
        except OSError as exc:
            raise FormatError(path, "file", None, exc.strerror or str(exc)) from None


class Cursor:
    """A read position in `buf` (a uint8 array); `path` is only used in error messages."""

    def __init__(self, buf, path):
        self.buf = buf
        self.path = str(path)
        self.size = len(buf)
        self.pos = 0

    def error(self, field, message, offset=None):
        return FormatError(self.path, field, self.pos if offset is None else offset, message)

    def need(self, n, field):
        """Check that `n` more bytes exist at the current position."""
        left = self.size - self.pos
        if n > left:
            raise self.error(field, f"needs {n} bytes but the file ({self.size} bytes) has {left} left")

    def _unpack(self, st, field):
        self.need(st.size, field)
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def u8(self, field):
        return self._unpack(_U8, field)

    def u32(self, field):
        return self._unpack(_U32, field)

    def i32(self, field):
        return self._unpack(_I32, field)

    def u64(self, field):
        return self._unpack(_U64, field)

    def unpack(self, st, field):
        """Read one value with a prepared struct.Struct."""
        return self._unpack(st, field)

    def raw(self, n, field):
        """The next `n` bytes as a bytes object."""
        self.need(n, field)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def array(self, dtype, count, field):
        """The next `count` items of little-endian `dtype`, as a read-only view into the file."""
        dtype = np.dtype(dtype)
        if count < 0:
            raise self.error(field, f"negative element count {count}")
        # Compare counts before multiplying so a huge count cannot overflow into a small size.
        if count > (self.size - self.pos) // max(dtype.itemsize, 1):
            raise self.error(field, f"{count} elements of {dtype.itemsize} bytes pass the end of the "
                                    f"file ({self.size} bytes)")
        n = count * dtype.itemsize
        out = self.buf[self.pos:self.pos + n].view(dtype)
        self.pos += n
        return out

    def utf8(self, n, field):
        """The next `n` bytes decoded as UTF-8."""
        start = self.pos
        data = self.raw(n, field)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(field, f"invalid UTF-8 at byte {start + exc.start}", start) from None
