"""Opening a file someone else made: a regular file only, never blocking, read with a cap.

A FIFO, a terminal or /dev/zero named as a model, config.json or prompt would block the open or
never end the read, so `open_regular` opens without blocking (O_NONBLOCK) and refuses anything
whose fstat is not a regular file before reading a byte. `read_capped` reads a whole small file
(JSON, a tokenizer, a prompt) after checking its size against a limit the caller states.

`confined` is the rule for the files of a Hugging Face folder (docs/failures.md): a file's real
path, symlinks resolved, must lie inside the folder, or, for a snapshot of Hugging Face's cache
(`models--X/snapshots/REV/`, whose files are symlinks to `../../blobs/HASH`), inside that same
cache repository's `blobs/`.
"""

import json
import os
import stat

from formats.errors import FormatError

# What each non-regular kind is called in messages.
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path, mode, field):
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return FormatError(path, field, None, f"is {kind}, not a regular file")


def open_regular(path, field="file"):
    """A binary file object on `path`, which must be a regular file (FormatError otherwise,
    naming `field`); opening never blocks, even on a FIFO."""
    try:
        f = open(path, "rb", opener=_open_nonblocking)
    except IsADirectoryError:
        raise FormatError(path, field, None, "is a folder, not a regular file") from None
    except OSError as exc:
        raise FormatError(path, field, None, exc.strerror or str(exc)) from None
    except ValueError as exc:           # a NUL in the path
        raise FormatError(repr(str(path)), field, None, str(exc)) from None
    mode = os.fstat(f.fileno()).st_mode
    if not stat.S_ISREG(mode):
        f.close()
        raise _not_regular(path, mode, field)
    # Reads are then ordinary blocking reads: O_NONBLOCK only mattered for the open.
    os.set_blocking(f.fileno(), True)
    return f


def _open_nonblocking(path, flags):
    return os.open(path, flags | os.O_NONBLOCK)


def read_capped(path, limit, field="file"):
    """The whole of the regular file `path` as bytes; FormatError when it holds more than
    `limit` bytes (the message states the limit), before any of it is read."""
    with open_regular(path, field) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FormatError(path, field, None, f"{size} bytes, over the {limit}-byte limit for this file")
        data = f.read(size + 1)         # read(n) allocates n bytes first: ask for what fstat saw
        if len(data) > size:            # grown since fstat
            data += f.read(limit + 1 - len(data))
    if len(data) > limit:
        raise FormatError(path, field, None, f"over the {limit}-byte limit for this file")
    return data


# config.json, a tokenizer's JSON and a sharded checkpoint's index are a few KB to a few hundred
# KB; 3 GiB of one is not a model.
MAX_JSON_BYTES = 64 << 20


def parse_json(data, path, field="json"):
    """JSON bytes -> object; FormatError naming `path` for anything that is not a JSON text: NaN,
    Infinity and -Infinity (Python's json takes them by default) included."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise FormatError(path, field, None, f"not a JSON text: {str(exc)[:200]}") from None


def _refuse_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def cache_blobs(folder):
    """The `blobs/` folder of the Hugging Face cache repository whose snapshot `folder` is, or None."""
    real = os.path.realpath(folder)
    snapshots = os.path.dirname(real)
    if os.path.basename(snapshots) != "snapshots":
        return None
    blobs = os.path.join(os.path.dirname(snapshots), "blobs")
    return blobs if os.path.isdir(blobs) else None


def confined(folder, path, field="file"):
    """`path` (a file of the folder `folder`) when its real path lies inside the folder or inside
    the same cache repository's blobs/ (cache_blobs); FormatError naming `path` otherwise."""
    real = os.path.realpath(path)
    roots = [os.path.realpath(folder), cache_blobs(folder)]
    if any(root and os.path.commonpath([root, real]) == root for root in roots):
        return path
    raise FormatError(path, field, None, "is a symlink to a file outside the folder (a Hugging Face "
                                         "folder's files must lie in it, or in its cache's blobs/)")
