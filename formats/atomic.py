"""Write a file whole or not at all: a temp file in the same directory, fsync, then rename; a set
of files (atomic_files) or a folder (atomic_folder) likewise."""

import contextlib
import errno
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file object; on success it replaces `path` atomically.

    On any exception the temp file is removed and `path` is left as it was (absent or the old
    file). The temp file lives beside `path` so that os.replace never crosses a filesystem.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as exc:
        # A read-only or missing folder: name the file asked for, not the temp file's random name.
        raise _failed(exc, path, "was not written") from None
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
            raise _failed(exc, path, "was left as it was") from exc
        raise
    # The rename itself is durable only once the directory entry is flushed too.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _failed(exc, path, what):
    """An OSError that names `path` (not a temp name) and says what became of it."""
    return OSError(exc.errno, f"{exc.strerror or exc}; {os.path.basename(path)} {what}", path)


@contextlib.contextmanager
def atomic_files(*paths):
    """Yield one temp path beside each of `paths`; on success each temp file is renamed over its
    path, on any exception every temp file is removed and every path left as it was: files
    written as a set (a model and its tokenizer.bin) appear together or not at all.

    The renames come one after another, each atomic: only a failing rename in a folder already
    written to could leave the first in place without the second."""
    paths = [os.path.abspath(os.fspath(p)) for p in paths]
    temps = []
    try:
        for path in paths:
            try:
                fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                           dir=os.path.dirname(path))
            except OSError as exc:
                raise _failed(exc, path, "was not written") from None
            os.close(fd)
            temps.append(tmp)
        yield temps
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a new empty folder beside `path`; on success it takes `path`'s place whole (a folder
    already there is removed: nothing of it stays beside the new files), on any exception it is
    removed and `path` is left as it was."""
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OSError(errno.ENOTDIR, f"not a folder; {name} was left as it was", path)
    try:
        tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise _failed(exc, path, "was not written") from None
    try:
        umask = os.umask(0)             # mkdtemp makes it 0700; give it mkdir's mode
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        yield tmp
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=parent)
            os.rename(path, old)            # onto an empty folder: allowed, and atomic
        try:
            os.rename(tmp, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _failed(exc, path, "was left as it was") from exc
        raise
