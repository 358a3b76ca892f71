"""reference/runtime/blas.py: BLAS on one thread for a while, the previous count restored after."""

import numpy as np
import pytest

from reference.runtime import blas


def _numpy_uses_openblas():
    config = np.show_config(mode="dicts")
    return "openblas" in str(config.get("Build Dependencies", {}).get("blas", {}).get("name", "")).lower()


def test_openblas_is_found_where_numpy_uses_it():
    # NumPy's Linux wheels bundle scipy-openblas: there the control must be found, or the fast
    # path's one-token steps silently fight OpenBLAS's spinning threads (blas.py's docstring).
    assert blas.controllable() == _numpy_uses_openblas()


@pytest.mark.skipif(not blas.controllable(), reason="NumPy is not built on OpenBLAS here: nothing to set")
def test_single_threaded_sets_one_and_restores_the_count_nested_and_on_errors():
    before = blas.threads()
    with blas.single_threaded():
        assert blas.threads() == 1
        with blas.single_threaded():
            assert blas.threads() == 1
        assert blas.threads() == 1          # the inner block's end does not restore yet
    assert blas.threads() == before
    with pytest.raises(KeyError):
        with blas.single_threaded():
            raise KeyError("inside")
    assert blas.threads() == before

