"""Where the fast path's weights and KV cache live in memory.

A one-token step reads every weight once, front to back, so decode runs at the speed of that
stream. Through the file's memory map the weights sit in whatever pages the page cache holds
(often 4 KiB: a TLB miss every 4 KiB). `resident` reads them once into an anonymous buffer on a
2 MiB boundary, advised to use transparent huge pages, so one TLB entry covers 2 MiB. The copy
costs a read at load, and the weights are no longer shared with other processes; resident memory
is unchanged (every weight is touched by the first token, and readinto never maps the file).
Without huge pages the buffer is an ordinary one. Figures: docs/benchmarks.md.

Runtime (reference/runtime/__init__.py): no maths here.
"""

import errno
import math
import mmap
import platform
import sys

import numpy as np

from formats.errors import FormatError

HUGE_PAGE_BYTES = 2 << 20
# Linux's MAP_NORESERVE: mmap names it from Python 3.13; before, its value where it is 0x4000 (x86,
# ARM, RISC-V; other architectures number it otherwise and map without it, charged in full).
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform == "linux" and platform.machine() in
                        ("x86_64", "i686", "aarch64", "armv7l", "riscv64") else 0)


def huge_page_buffer(nbytes):
    """A zero-filled writable uint8 array of `nbytes`, starting on a 2 MiB boundary in
    its own private anonymous mapping advised to use transparent huge pages where there are any."""
    size = nbytes + HUGE_PAGE_BYTES
    if hasattr(mmap, "MAP_PRIVATE"):
        # Private, not mmap's default MAP_SHARED: shared anonymous memory is shmem, whose huge
        # pages have their own switch (shmem_enabled), off by default.
        buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:
        buf = mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buf.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass                        # a kernel without THP: ordinary pages, same contents
    array = np.frombuffer(buf, dtype=np.uint8)          # keeps `buf` alive
    skip = -array.ctypes.data % HUGE_PAGE_BYTES
    return array[skip:skip + nbytes]


# Arrays smaller than this stay ordinary (np.empty): a huge page is 2 MiB of resident memory once
# touched, whatever part of it an array uses.
HUGE_PAGE_MIN_BYTES = 4 << 20


def huge_page_array(shape, dtype):
    """An uninitialised array of `shape` starting on a 2 MiB boundary in huge pages
    (huge_page_buffer) when it takes at least HUGE_PAGE_MIN_BYTES, else np.empty's.

    For arrays read in runs far apart, such as Int8BlockMatrix's codes (one run per block element,
    n_rows bytes from the next): NumPy's own large allocations are not aligned and got huge pages
    only in part (docs/benchmarks.md)."""
    dtype = np.dtype(dtype)
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    if n_bytes < HUGE_PAGE_MIN_BYTES:
        return np.empty(shape, dtype)
    return huge_page_buffer(n_bytes).view(dtype).reshape(shape)


def zeros_on_touch(shape, dtype=np.float32):
    """A zero-filled array whose memory becomes resident page by page as it is written.

    For the KV cache, written one position at a time: in NumPy's huge pages, writing position 0
    of each layer and head made the whole cache resident at once. Advised MADV_NOHUGEPAGE, it
    grows with the positions used. Mapped MAP_NORESERVE, the untouched rest is not charged to
    the machine's commit limit either: a header's context of 2^32-1 positions maps a cache far
    larger than memory and costs only the positions used. MemoryError where it cannot be mapped
    at all (past the address space, or under strict overcommit)."""
    nbytes = max(1, math.prod(shape) * np.dtype(dtype).itemsize)
    if not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.zeros(shape, dtype)
    if nbytes > sys.maxsize:
        raise MemoryError(f"{nbytes} bytes is past the address space")
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
    except OSError as exc:
        if exc.errno != errno.ENOMEM:
            raise
        raise MemoryError(f"{nbytes} bytes cannot be mapped") from None
    try:
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    except OSError:
        pass                            # a kernel without THP: small pages anyway
    return np.frombuffer(buf, dtype=dtype, count=math.prod(shape)).reshape(shape)


def _mapped_file(array):
    """(path, byte offset in it) of an array that is a view into an np.memmap, else None."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not isinstance(root, np.memmap) or root.filename is None:
        return None
    return root.filename, root.offset + array.ctypes.data - root.ctypes.data


def resident(weights):
    """`weights` (name -> array or other object) with every float32 array that is a contiguous
    view into a memory-mapped file replaced by a copy, read from the file into one huge-page
    buffer. The copies are packed in file order, so matrices that lie back to back in the file
    (wq, wk, wv in a GGUF) lie back to back in the buffer too; names that view the same bytes
    share one copy. Other values pass through."""
    regions = {}                                    # (path, offset, shape) -> names viewing it
    for name, w in weights.items():
        if isinstance(w, np.ndarray) and w.dtype == np.float32 and w.flags.c_contiguous and w.size:
            where = _mapped_file(w)
            if where is not None:
                regions.setdefault((*where, w.shape), []).append(name)
    if not regions:
        return dict(weights)
    order = sorted(regions)
    itemsize = np.dtype(np.float32).itemsize
    buffer = huge_page_buffer(sum(int(np.prod(shape)) * itemsize for _, _, shape in order))
    copies, position, files = {}, 0, {}
    try:
        for path, offset, shape in order:
            names = regions[path, offset, shape]
            nbytes = int(np.prod(shape)) * itemsize
            if path not in files:
                files[path] = open(path, "rb", buffering=0)
            target = buffer[position:position + nbytes]
            read_exactly(files[path], offset, target, path, names[0])
            copy = target.view(np.float32).reshape(shape)
            copy.flags.writeable = False                # as the mapped file was: read-only
            copies.update(dict.fromkeys(names, copy))
            position += nbytes
    finally:
        for f in files.values():
            f.close()
    return {name: copies.get(name, w) for name, w in weights.items()}


def read_exactly(f, offset, target, path, name):
    """Fill `target` (uint8) with the file's bytes from `offset`; a file that shrank since it was
    mapped is a FormatError naming the tensor, never a silently short copy."""
    f.seek(offset)
    view, done = memoryview(target), 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            raise FormatError(path, name, offset + done,
                              f"the file ended while reading {len(view)} bytes (was it truncated after opening?)")
        done += n
