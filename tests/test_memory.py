"""reference/runtime/memory.py: float32 weights read out of their file into one huge-page buffer.

What the copy must keep: every value (bit for bit), file order (so wq|wk|wv stay fusable), the
read-only flag, and everything that is not a float32 view of a file untouched. A file that shrank
after it was mapped is a FormatError naming the tensor, not a short copy. The KV cache's memory
(zeros_on_touch) costs what is written, however large the cache declared.
"""

import mmap
from pathlib import Path

import numpy as np
import pytest

from formats.errors import FormatError
from reference.runtime.packing import fused_rows
from reference.runtime.memory import (HUGE_PAGE_BYTES, HUGE_PAGE_MIN_BYTES, huge_page_array, huge_page_buffer,
                                      resident, zeros_on_touch)


def test_huge_page_buffer_is_aligned_zeroed_and_writable():
    for nbytes in (1, 4096, HUGE_PAGE_BYTES + 3):
        buf = huge_page_buffer(nbytes)
        assert buf.dtype == np.uint8 and buf.shape == (nbytes,)
        assert buf.ctypes.data % HUGE_PAGE_BYTES == 0
        assert not buf.any()
        buf[:] = 7
        assert (buf == 7).all()


def _mapped(tmp_path, arrays, gap=12):
    """Write the arrays to one file with `gap` bytes between them; return memmap views of each."""
    path = tmp_path / "w.bin"
    blobs, offsets, offset = [], [], 0
    for a in arrays:
        offsets.append(offset)
        blobs += [a.tobytes(), b"\xff" * gap]
        offset += a.nbytes + gap
    path.write_bytes(b"".join(blobs))
    whole = np.memmap(path, dtype=np.uint8, mode="r")
    return path, [whole[o:o + a.nbytes].view(a.dtype).reshape(a.shape) for o, a in zip(offsets, arrays)]


def test_huge_page_array_aligns_large_arrays_only():
    large = huge_page_array((4, HUGE_PAGE_MIN_BYTES // 16), np.float32)    # exactly the threshold
    assert large.shape == (4, HUGE_PAGE_MIN_BYTES // 16) and large.dtype == np.float32
    assert large.ctypes.data % HUGE_PAGE_BYTES == 0 and large.flags.writeable and large.flags.c_contiguous
    large[...] = 7
    assert (large == 7).all()
    small = huge_page_array((5, 4), np.int8)
    assert small.shape == (5, 4) and small.dtype == np.int8 and small.base is None      # np.empty's own


def test_resident_copies_mapped_float32_arrays_bit_for_bit_in_file_order(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape, dtype=np.float32) for shape in [(5, 8), (3, 8), (2, 8), (7,)]]
    arrays[0][0, 0] = np.float32("nan")                 # any bit pattern survives
    _, views = _mapped(tmp_path, arrays)
    names = ["wv", "wq", "wk", "norm"]                    # dict order is not file order
    weights = dict(zip(names, [views[2], views[0], views[1], views[3]]))
    got = resident(weights)
    assert list(got) == names
    for name, original in zip(names, [arrays[2], arrays[0], arrays[1], arrays[3]]):
        w = got[name]
        assert not isinstance(w, np.memmap) and not isinstance(w.base, np.memmap)
        assert not w.flags.writeable
        assert w.tobytes() == original.tobytes()
    # Packed in file order without the gaps: matrices that followed one another are adjacent.
    fused = fused_rows([got["wq"], got["wk"], got["wv"]])
    assert fused is not None and fused.tobytes() == np.concatenate(arrays[:3]).tobytes()


def test_names_viewing_the_same_bytes_share_one_copy(tmp_path):
    _, (embeddings,) = _mapped(tmp_path, [np.arange(12, dtype=np.float32).reshape(3, 4)])
    got = resident({"tok_embeddings.weight": embeddings, "output.weight": embeddings[:]})
    assert got["tok_embeddings.weight"] is got["output.weight"]
    assert got["output.weight"].tobytes() == np.arange(12, dtype=np.float32).tobytes()


def test_resident_passes_everything_else_through(tmp_path):
    in_memory = np.ones((4, 4), dtype=np.float32)
    _, (codes, halves) = _mapped(tmp_path, [np.arange(16, dtype=np.int8), np.ones(4, dtype=np.float16)])
    marker = object()
    weights = {"a": in_memory, "codes": codes, "halves": halves, "other": marker}
    got = resident(weights)
    assert all(got[name] is weights[name] for name in weights)


def test_a_file_truncated_after_mapping_is_a_format_error(tmp_path):
    path, views = _mapped(tmp_path, [np.ones((64, 64), dtype=np.float32), np.ones((64, 64), dtype=np.float32)])
    with open(path, "r+b") as f:
        f.truncate(64 * 64 * 4 + 100)                     # the second matrix is cut
    with pytest.raises(FormatError) as excinfo:
        resident({"first": views[0], "second": views[1]})
    assert "second" in str(excinfo.value) and str(path) in str(excinfo.value)


def test_zeros_on_touch_is_a_zeroed_writable_array_of_the_shape():
    cache = zeros_on_touch((2, 3, 5, 4))
    assert cache.shape == (2, 3, 5, 4) and cache.dtype == np.float32 and not cache.any()
    cache[1, :, 2] = 1.5
    assert cache.sum() == 1.5 * 3 * 4


def resident_bytes():
    """This process's resident memory now (/proc/self/statm's second field, in pages)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * mmap.PAGESIZE


# Under strict overcommit (vm.overcommit_memory 2) the kernel charges every mapping in full,
# MAP_NORESERVE or not: there a cache larger than the commit limit is refused (MemoryError).
STRICT_OVERCOMMIT = Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "2"


@pytest.mark.skipif(STRICT_OVERCOMMIT, reason="strict overcommit charges every mapping in full")
def test_a_cache_far_larger_than_memory_costs_only_the_pages_written():
    """1 TiB, past any machine this runs on: mapped without reserving it (MAP_NORESERVE), it maps,
    and writing its first and last positions makes a few pages resident (bound: 64 MiB, far below
    the smallest reservation a real kernel would refuse, and above the test's own allocations)."""
    before = resident_bytes()
    cache = zeros_on_touch((2, 2**37))                      # (2, 2^37) float32 = 1 TiB
    cache[0, 0] = cache[1, -1] = 1.0
    assert cache[0, 0] == cache[1, -1] == 1.0 and cache[0, 1] == cache[1, -2] == 0.0
    assert resident_bytes() - before < 64 << 20


@pytest.mark.parametrize("shape", [(2**48,), (2**62,)], ids=["1 PiB: past the address space", "past an index"])
def test_a_cache_that_cannot_be_mapped_at_all_is_a_memory_error_naming_its_bytes(shape):
    with pytest.raises(MemoryError, match=f"^{4 * shape[0]} bytes"):
        zeros_on_touch(shape)


def _resident_bytes_of(path):
    """Bytes of `path`'s mappings that this process has touched (/proc/self/smaps' Rss)."""
    total, current = 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:          # a mapping's header line
            current = fields[-1] if len(fields) >= 6 else None
        elif fields[0] == "Rss:" and current == str(path):
            total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_loading_the_fast_path_leaves_the_files_map_untouched(tmp_path):
    """The fast path reads an f32 file's matrices into its own memory with read(): the checks at load
    (finite weights) must read those copies, not the file's map, or the file's pages count in RSS
    as well (f32 generate at dim 288 peaked at 164 MB instead of 106). Tolerance: the header and
    the vocabulary, a small part of this 8 MB file, may be read through the map."""
    from formats.spec import ModelArgs
    from models import open_model
    from tests.support.files import write_gguf
    from tests.support.weights import fan_in_weights

    args = ModelArgs(dim=256, n_layers=2, n_heads=4, n_kv_heads=4, vocab_size=512, hidden_dim=768)
    path = write_gguf(args, fan_in_weights(args, seed=1), tmp_path / "m.gguf")
    source = open_model(path)                      # holds the file's map while we look at it
    model = source.model(fast=True)
    touched, size = _resident_bytes_of(path.resolve()), path.stat().st_size
    assert len(model.layers) == args.n_layers
    assert touched < size // 8, f"{touched} of the file's {size} bytes resident through its map"
