"""Shared test set-up: quiet TensorFlow, the TensorFlow backend, small helpers."""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600):
    """Runs the real `nlp-attn` entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "nlp_attn", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """A tiny trained run with two-head attention (see run_fixture.py)."""
    import run_fixture

    return run_fixture.attention_run(tmp_path_factory)


@pytest.fixture(scope="session")
def mean_run(tmp_path_factory):
    """A tiny trained run with mean pooling and WordPiece (see run_fixture.py)."""
    import run_fixture

    return run_fixture.mean_run(tmp_path_factory)
