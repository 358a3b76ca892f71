"""bench_inference's ISA line: a speed table held to AVX2 on an AVX-512 machine (docs/benchmarks.md)
compares like with like only if it says what each side ran, so the line must follow what NumPy
dispatches and what llama.cpp was built for, not the CPU's flags."""

import importlib.util

import pytest

from tests.support.cli import REPO, run_python

PRINT_ISA = f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import bench_inference as b; print(b.isa_description())"


def numpy_part(line):
    return line.partition("NumPy SIMD: ")[2].partition(";")[0].split()


def test_numpy_part_drops_what_npy_disable_cpu_features_turns_off():
    plain = run_python("-c", PRINT_ISA)
    held = run_python("-c", PRINT_ISA, env={"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"})
    assert plain.returncode == 0 and held.returncode == 0, plain.stderr + held.stderr
    dispatched = numpy_part(held.stdout)
    assert not {"X86_V4", "AVX512_ICL", "AVX512_SPR"} & set(dispatched), held.stdout
    assert set(dispatched) <= set(numpy_part(plain.stdout)), (plain.stdout, held.stdout)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
def test_llama_cpp_part_is_its_build_not_the_cpu():
    import llama_cpp

    built = llama_cpp.llama_print_system_info().decode()
    line = run_python("-c", PRINT_ISA).stdout
    named = line.partition("llama.cpp built for: ")[2].split()
    assert named and all(f"{feature} = 1" in built for feature in named), (line, built)
    assert ("AVX512" in named) == ("AVX512 = 1" in built), (line, built)
