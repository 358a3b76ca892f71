"""The lookup tables of the i-quants and FP4 types: the stored ones (formats/quants/tables.py)
expanded and compared with gguf-py's copies of llama.cpp's, value for value; the derived ones
(sign patterns, E2M1, UE4M3) against gguf-py's and against their definitions."""

import doctest

import numpy as np
import pytest
from gguf import quants as gguf_quants

import formats.quant
import formats.quants.tables
from formats.quants import lattice, lookup
from formats.quants.tables import IQ4_NL_VALUES


def gguf_grid(cls):
    cls.init_grid()
    return cls.grid.reshape(cls.grid_shape)


@pytest.mark.parametrize("ours, theirs", [
    (lattice.IQ2_XXS_GRID, gguf_quants.IQ2_XXS), (lattice.IQ2_XS_GRID, gguf_quants.IQ2_XS),
    (lattice.IQ2_S_GRID, gguf_quants.IQ2_S), (lattice.IQ3_XXS_GRID, gguf_quants.IQ3_XXS),
    (lattice.IQ3_S_GRID, gguf_quants.IQ3_S), (lattice.IQ1_GRID, gguf_quants.IQ1_S),
    (lattice.IQ1_GRID, gguf_quants.IQ1_M)], ids=lambda x: getattr(x, "__name__", ""))
def test_grids_equal_gguf_py(ours, theirs):
    assert ours.dtype == np.int8
    np.testing.assert_array_equal(ours, gguf_grid(theirs))


def test_grid_sizes_and_levels():
    # The sizes ggml's names promise (iq2xxs_grid[256], iq2xs_grid[512], iq2s_grid[1024],
    # iq3xxs_grid[256], iq3s_grid[512], iq1s_grid[2048]) and the level sets of each.
    expected = {"IQ2_XXS_GRID": (256, 8, {8, 25, 43}), "IQ2_XS_GRID": (512, 8, {8, 25, 43}),
                "IQ2_S_GRID": (1024, 8, {8, 25, 43}),
                "IQ3_XXS_GRID": (256, 4, {4, 12, 20, 28, 36, 44, 52, 62}),
                "IQ3_S_GRID": (512, 4, set(range(1, 16, 2))), "IQ1_GRID": (2048, 8, {-1, 0, 1})}
    for name, (rows, width, levels) in expected.items():
        grid = getattr(lattice, name)
        assert grid.shape == (rows, width) and set(np.unique(grid)) == levels, name
        assert len(np.unique(grid, axis=0)) == rows, f"{name} repeats a point"


def test_ksigns_are_gguf_pys_and_have_an_even_number_of_minus_signs():
    theirs = np.frombuffer(gguf_quants.IQ2_XXS.ksigns, dtype=np.uint8)
    np.testing.assert_array_equal(lattice.KSIGNS, lattice.SIGNS[theirs])
    assert np.all((lattice.KSIGNS < 0).sum(axis=1) % 2 == 0)
    # The first 7 signs are the index's bits, so all 128 patterns differ.
    np.testing.assert_array_equal((lattice.KSIGNS[:, :7] < 0) @ (1 << np.arange(7)), np.arange(128))


def test_iq1_shifted_grid_is_grid_plus_delta():
    shifted = lattice.IQ1_CODES / np.float32(8)            # the codes are 8 * (grid + delta)
    np.testing.assert_array_equal(shifted[0], lattice.IQ1_GRID + np.float32(0.125))
    np.testing.assert_array_equal(shifted[1], lattice.IQ1_GRID - np.float32(0.125))


def test_iq4_nl_values_are_gguf_pys():
    assert IQ4_NL_VALUES == gguf_quants.IQ4_NL.kvalues
    assert lookup.IQ4_NL_TABLE.tolist() == list(gguf_quants.IQ4_NL.kvalues)


def test_e2m1_doubled_is_gguf_pys_and_the_ocp_table():
    assert lookup.E2M1_DOUBLED.tolist() == list(gguf_quants.MXFP4.kvalues)
    # OCP MX spec, FP4 E2M1: 0, 0.5, 1, 1.5, 2, 3, 4, 6 for codes 0..7, negated by bit 3.
    assert (lookup.E2M1_DOUBLED[:8] / 2).tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]


def test_ue4m3_half_is_gguf_pys():
    everything = np.arange(256, dtype=np.uint8)
    theirs = gguf_quants.NVFP4.ue4m3_to_fp32(everything).astype(np.float32)
    np.testing.assert_array_equal(lookup.UE4M3_HALF.view(np.uint32), theirs.view(np.uint32))
    # By hand: 0x38 is exponent 7, mantissa 0 = 1.0; 0x01 the smallest subnormal 2**-9; 0x7e
    # the largest, (1 + 6/8) * 2**8 = 448; each halved.
    assert lookup.UE4M3_HALF[[0x38, 0x01, 0x7E, 0x7F]].tolist() == [0.5, 2.0**-10, 224.0, 0.0]


@pytest.mark.parametrize("module", [formats.quant, formats.quants.tables])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
