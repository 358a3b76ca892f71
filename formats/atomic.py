"""Write a file whole or not at all: a temp file in the same directory, fsync, then rename."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file object; on success it replaces `path` atomically.

    On any exception the temp file is removed and `path` is left as it was (absent or the old
    file). The temp file lives beside `path` so that os.replace never crosses a filesystem.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file 0600; give it the mode open() would (0666 less the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            # A full disk or a failing device: say what did *not* happen, in the one line the CLI prints.
            raise OSError(exc.errno, f"{exc.strerror or exc}; {os.path.basename(path)} was left as it was",
                          exc.filename or path) from exc
        raise
    # The rename itself is durable only once the directory entry is flushed too.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
