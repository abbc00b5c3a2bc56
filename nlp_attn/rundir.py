"""The run directory: its layout, atomic writes, and reading a finished run.

Training creates it; evaluate, predict, explain and export only read it
(`runs/<timestamp>-<name>/`, see DESIGN.md).
"""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path

from nlp_attn.errors import RunError

CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.txt"
VOCABULARY_FILE = "vocabulary.txt"
MODEL_FILE = "model.keras"
SERVING_DIR = "serving"
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"
METRICS_FILE = "metrics.json"
REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
CONFUSION_MATRIX_IMAGE = "confusion_matrix.png"


def create_run_dir(parent: str | Path, name: str) -> Path:
    """Creates a new, empty `<parent>/<timestamp>-<name>` directory.

    Two runs never share a directory: when the name is taken, a numeric suffix
    is added, and creation itself is atomic (`mkdir` without `exist_ok`).
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{name}"
    for attempt in range(1000):
        path = parent / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RunError(f"could not create a new run directory under {parent}")


def require_run(path: str | Path, *names: str) -> Path:
    """Returns `path` as a run directory, checking that the named files exist."""
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run directory not found: {path}")
    missing = [name for name in (CONFIG_FILE, *names) if not (path / name).exists()]
    if missing:
        raise RunError(
            f"{path} is not a finished run directory: missing {', '.join(missing)}"
        )
    return path


def read_labels(run: str | Path) -> list[str]:
    """Reads the run's label names, in index order."""
    path = Path(run) / LABELS_FILE
    if not path.is_file():
        raise RunError(f"run has no {LABELS_FILE}: {path}")
    labels = path.read_text(encoding="utf-8").splitlines()
    if not labels:
        raise RunError(f"{path} is empty")
    return labels


def write_labels(run: str | Path, labels: list[str]) -> None:
    """Writes label names, one a line, in index order."""
    atomic_write_text(
        Path(run) / LABELS_FILE, "".join(f"{label}\n" for label in labels)
    )


def atomic_write_text(path: Path, text: str) -> None:
    """Writes text so that readers see the old file or the new one, never half."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


class atomic_path:  # noqa: N801 - used like a function in a `with` statement
    """A context manager giving a temporary path that replaces `path` on success.

    Example:

    >>> with atomic_path(Path("model.keras")) as temporary:
    ...     model.save(temporary)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.temporary: Path | None = None

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name ends with the real one, so writers that check the
        # extension (Keras wants ".keras" or ".weights.h5") accept it.
        handle, name = tempfile.mkstemp(
            prefix=".tmp-", suffix=f"-{self.path.name}", dir=self.path.parent
        )
        os.close(handle)
        os.unlink(name)
        self.temporary = Path(name)
        return self.temporary

    def __exit__(self, error_type, error, traceback) -> None:
        assert self.temporary is not None
        if error_type is None:
            os.replace(self.temporary, self.path)
            return
        if self.temporary.is_dir():
            import shutil

            shutil.rmtree(self.temporary, ignore_errors=True)
        elif self.temporary.exists():
            self.temporary.unlink()
