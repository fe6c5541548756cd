import os
from pathlib import Path

import jax
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def x64():
    """Run a test in float64 (exact references need it)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def shared_data():
    if not (SHARED_DATA / "mnist").exists():
        pytest.skip(f"real MNIST files not found at {SHARED_DATA} (../shared absent)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("JAXLAND_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "jaxland-cache"))
