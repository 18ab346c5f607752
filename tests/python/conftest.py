"""pytest setup of the Python bindings' tests (run by ctest as python.bindings,
with PYTHONPATH at the build tree's bench/python; by hand:
PYTHONPATH=build/release/bench/python python3 -m pytest tests/python)."""

import numpy as np
import pytest

import attnkit


def pytest_report_header(config):
    return (f"attnkit {attnkit.__version__} from {attnkit.__file__}: SIMD {attnkit.simd}, "
            f"OpenMP {attnkit.openmp} ({attnkit.max_threads()} threads)")


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)
