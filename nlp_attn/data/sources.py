"""Data sources: parse a data spec and read its examples with their label names.

The first step of the data stage: `split.py` turns what these readers return into
train / validation / test `Examples`; `pipeline.py` later feeds them to the model.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import gzip
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nlp_attn.config import DataConfig
from nlp_attn.errors import ConfigError, DataError

SPLIT_NAMES = ("train", "validation", "test")
FILE_SCHEMES = ("csv", "tsv", "jsonl", "dir")
SPEC_FORMS = "default, tfds:NAME[/CONFIG], csv:PATH, tsv:PATH, jsonl:PATH, dir:PATH"
DEFAULT_FIELDS = DataConfig()
TFDS_READ_BATCH = 8192
UNLABELLED = -1
# The key under which a file or folder source stores its one, unnamed collection.
WHOLE_SOURCE = "all"

_INTEGER = re.compile(r"[+-]?\d+")


@dataclasses.dataclass
class Examples:
    """Texts and their label indices, ready for tokenization.

    Attributes:
        texts: object array of `str`, shape `(n,)`.
        labels: int32 array, shape `(n,)`, indices into the run's `label_names`.
    """

    texts: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass
class NamedExamples:
    """Texts and their labels as names, before the run fixes the label order.

    Attributes:
        texts: object array of `str`, shape `(n,)`.
        labels: object array of `str`, shape `(n,)`: the label name of each text.
    """

    texts: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: np.ndarray) -> NamedExamples:
        """Returns the examples at `indices`, in that order."""
        return NamedExamples(self.texts[indices], self.labels[indices])


@dataclasses.dataclass
class SourceData:
    """Everything one data spec holds.

    Attributes:
        spec: the data spec, for messages.
        splits: split name -> examples. A file or folder holds one collection
            that is not a named split; it is stored under `WHOLE_SOURCE`.
        label_order: the class order the source declares (a TFDS `ClassLabel`),
            or None when only the labels themselves are known (files, folders).
        notes: human lines about what reading skipped or changed.
        split_names: every split the source has, read or not (TFDS sources).
    """

    spec: str
    splits: dict[str, NamedExamples]
    label_order: list[str] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    split_names: list[str] = dataclasses.field(default_factory=list)

    @property
    def has_named_splits(self) -> bool:
        """False for files and folders, whose one collection serves any split."""
        return WHOLE_SOURCE not in self.splits

    def select(self, split: str) -> NamedExamples:
        """Returns the named split, or the whole collection of a file source.

        Raises:
            DataError: the source has named splits but not this one, or the split
                has no labelled examples.
        """
        if not self.has_named_splits:
            return self.splits[WHOLE_SOURCE]
        if split not in self.splits:
            known = ", ".join(self.split_names) or "none"
            raise DataError(
                f"{self.spec} has no labelled split '{split}' (its splits: {known})"
            )
        return self.splits[split]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: `scheme:target` (the target is empty for `default`)."""

    scheme: str
    target: str

    def __str__(self) -> str:
        return self.scheme if not self.target else f"{self.scheme}:{self.target}"


def parse_spec(spec: str) -> DataSpec:
    """Splits a data spec into its scheme and target.

    Args:
        spec: `default`, `tfds:NAME[/CONFIG]`, `csv:PATH`, `tsv:PATH`,
            `jsonl:PATH` or `dir:PATH`.

    Returns:
        The parsed `DataSpec`.

    Raises:
        ConfigError: the scheme is unknown or the target is missing.
    """
    spec = spec.strip()
    if spec == "default":
        return DataSpec("default", "")
    scheme, separator, target = spec.partition(":")
    if separator and scheme in ("tfds", *FILE_SCHEMES) and target.strip():
        return DataSpec(scheme, target.strip())
    if separator and scheme in ("tfds", *FILE_SCHEMES):
        raise ConfigError(f"data spec '{spec}' names no {scheme} target")
    raise ConfigError(
        f"unknown data spec '{spec}': expected one of {SPEC_FORMS}{_spec_hint(spec)}"
    )


def read_source(
    spec: str, config: DataConfig, splits: Sequence[str] = SPLIT_NAMES
) -> SourceData:
    """Reads the examples a data spec holds.

    Files and folders are read whole; TFDS datasets (and `default`, the Rotten
    Tomatoes builder) are prepared in `data.data_dir` if needed and only the
    requested splits that exist are read.

    Args:
        spec: a data spec, see `parse_spec`.
        config: the data config: field names, directories, the empty-text rule.
        splits: the named splits wanted from a TFDS source.

    Returns:
        A `SourceData` whose labels are still names.

    Raises:
        ConfigError: the spec is malformed.
        DataError: the data is missing, unreadable or not a classification set.
    """
    parsed = parse_spec(spec)
    if parsed.scheme == "default":
        from nlp_attn.data import rotten_tomatoes

        builder = rotten_tomatoes.RottenTomatoes(data_dir=config.data_dir or None)
        return _read_builder(builder, parsed, config, splits)
    if parsed.scheme == "tfds":
        return _read_builder(_tfds_builder(parsed, config), parsed, config, splits)
    if parsed.scheme == "dir":
        return _collect(parsed, config, _folder_rows(parsed))
    path = Path(parsed.target).expanduser()
    text = _read_text(path, parsed)
    if parsed.scheme == "jsonl":
        rows = _jsonl_rows(text, parsed, config)
    else:
        rows = _table_rows(text, parsed, config)
    return _collect(parsed, config, rows)


def is_integer_label(name: str) -> bool:
    """True when a label name spells an integer (such labels sort numerically)."""
    return bool(_INTEGER.fullmatch(name))


def label_name(value: Any) -> str | None:
    """Returns a label value from a file as a label name, or None when missing.

    Strings are stripped, integers (and floats with an integral value) become
    their decimal form, booleans `true` / `false`.

    Raises:
        DataError: the value is not a string, integer or boolean.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value.strip() or None
    raise DataError(f"label {value!r} is neither a name nor an integer")


# Files and folders.


def _read_text(path: Path, spec: DataSpec) -> str:
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "not found"
        raise DataError(f"{spec}: {path} is {what}")
    raw = _read_bytes(path, spec)
    if not raw.strip():
        raise DataError(f"{spec}: the file {path} is empty")
    return _decode(raw, str(path))


def _read_bytes(path: Path, spec: DataSpec | str) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, OSError) as error:
        raise DataError(f"{spec}: cannot read {path}: {error}") from None


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{where}: line {line}: bytes that are not UTF-8 ({raw[error.start]:#x} "
            f"at byte {error.start})"
        ) from None


def _table_rows(
    text: str, spec: DataSpec, config: DataConfig
) -> Iterator[tuple[str, Any, Any]]:
    """Yields `(where, text, label)` for each data row of a CSV or TSV file.

    TSV files are read without quoting: a field may hold any character but a tab
    or a line break.
    """
    if spec.scheme == "tsv":
        reader = csv.reader(
            io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE
        )
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
        text_column = _column(header, config.text_field, "text", spec)
        label_column = _column(header, config.label_field, "label", spec)
        start = reader.line_num + 1
        for row in reader:
            if row:
                text_value = row[text_column] if text_column < len(row) else None
                label_value = row[label_column] if label_column < len(row) else None
                yield f"line {start}", text_value, label_value
            start = reader.line_num + 1
    except csv.Error as error:
        raise DataError(f"{spec}: line {reader.line_num}: {error}") from None


def _column(header: list[str], name: str, role: str, spec: DataSpec) -> int:
    if name in header:
        return header.index(name)
    raise DataError(
        f"{spec}: no {role} column '{name}'; the columns are: {', '.join(header)} "
        f"(set data.{role}_field)"
    )


def _jsonl_rows(
    text: str, spec: DataSpec, config: DataConfig
) -> list[tuple[str, Any, Any]]:
    records = []
    keys: dict[str, None] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{spec}: line {number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{spec}: line {number}: expected a JSON object, got "
                f"{type(record).__name__}"
            )
        keys.update(dict.fromkeys(record))
        records.append((number, record))
    for name, role in ((config.text_field, "text"), (config.label_field, "label")):
        if name not in keys:
            raise DataError(
                f"{spec}: no {role} field '{name}'; the fields are: "
                f"{', '.join(keys)} (set data.{role}_field)"
            )
    rows = []
    for number, record in records:
        text_value = record.get(config.text_field)
        if text_value is not None and not isinstance(text_value, str):
            raise DataError(
                f"{spec}: line {number}: text is {type(text_value).__name__}, "
                "expected a string"
            )
        rows.append((f"line {number}", text_value, record.get(config.label_field)))
    return rows


def _folder_rows(spec: DataSpec) -> Iterator[tuple[str, Any, Any]]:
    """Yields `(where, text, label)` for each file under `<folder>/<label>/`."""
    root = Path(spec.target).expanduser()
    if not root.is_dir():
        what = "a file, not a folder" if root.exists() else "not found"
        raise DataError(f"{spec}: {root} is {what}")
    classes = sorted(
        path for path in root.iterdir() if path.is_dir() and not _hidden(path)
    )
    if not classes:
        raise DataError(f"{spec}: no class folders; expected one sub-folder per class")
    for folder in classes:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not _hidden(path):
                text = _decode(_read_bytes(path, spec), str(path))
                yield str(path), text, folder.name


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _collect(
    spec: DataSpec, config: DataConfig, rows: Iterable[tuple[str, Any, Any]]
) -> SourceData:
    """Applies the empty-text rule and the label check to rows of one source."""
    texts, labels = [], []
    skipped = 0
    for where, text, label in rows:
        if text is None or not text.strip():
            if config.empty_text == "error":
                raise DataError(
                    f"{spec}: {where}: empty or missing text (data.empty_text=error)"
                )
            skipped += 1
            continue
        try:
            name = label_name(label)
        except DataError as error:
            raise DataError(f"{spec}: {where}: {error}") from None
        if name is None:
            raise DataError(f"{spec}: {where}: empty or missing label")
        texts.append(text)
        labels.append(name)
    if not texts:
        raise DataError(f"{spec}: no examples with text")
    notes = []
    if skipped:
        notes.append(f"skipped {skipped} rows with empty text in {spec}")
    examples = NamedExamples(_object_array(texts), _object_array(labels))
    return SourceData(str(spec), {WHOLE_SOURCE: examples}, notes=notes)


def _object_array(values: list[str]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _spec_hint(spec: str) -> str:
    suffixes = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
    name = spec.removesuffix(".gz")
    for suffix, scheme in suffixes.items():
        if name.endswith(suffix):
            return f"; did you mean '{scheme}:{spec}'?"
    if Path(spec).is_dir():
        return f"; did you mean 'dir:{spec}'?"
    return ""


# TFDS datasets, the default one included.


def _tfds_builder(spec: DataSpec, config: DataConfig) -> Any:
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(spec.target, data_dir=config.data_dir or None)
    except tfds.core.registered.DatasetNotFoundError:
        # Deduplicated: a dataset loaded earlier in the process can be listed twice.
        names = list(dict.fromkeys(tfds.list_builders(with_community_datasets=False)))
        base = spec.target.split("/")[0].split(":")[0]
        close = difflib.get_close_matches(base, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DataError(f"unknown TFDS dataset '{spec.target}'{hint}") from None
    except ValueError as error:
        name, _, wanted = spec.target.partition("/")
        known = list(getattr(tfds.builder_cls(name), "builder_configs", {}))
        if wanted and wanted not in known:
            close = difflib.get_close_matches(wanted, known, n=3, cutoff=0.5)
            choices = ", ".join(close or known[:10])
            raise DataError(
                f"TFDS dataset '{name}' has no config '{wanted}' "
                f"({'did you mean' if close else 'it has'} {choices})"
            ) from None
        first_line = str(error).splitlines()[0]
        raise DataError(f"{spec}: {first_line}") from None


def _read_builder(
    builder: Any, spec: DataSpec, config: DataConfig, splits: Sequence[str]
) -> SourceData:
    """Prepares a TFDS builder if needed and reads the requested splits."""
    import tensorflow_datasets as tfds

    download_config = tfds.download.DownloadConfig(manual_dir=config.manual_dir or None)
    try:
        builder.download_and_prepare(download_config=download_config)
    except DataError:
        raise
    except Exception as error:  # network, manual files, disk: all the user's to fix
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataError(
            f"{spec}: could not prepare the dataset in {builder.data_dir_root} "
            f"({first_line}); without network, put its files in data.manual_dir"
        ) from None

    text_field, label_field = _tfds_fields(builder.info, spec, config)
    label_order = list(builder.info.features[label_field].names)
    # A freshly prepared dataset records its splits; when the info has none (as
    # under `tfds.testing.mock_data`), every requested split is tried.
    available = list(builder.info.splits.keys()) or list(splits)
    data = SourceData(str(spec), {}, label_order=label_order, split_names=available)
    for split in splits:
        # TFDS slicing such as `test[:50%]` is passed through to `as_dataset`.
        if split.partition("[")[0] not in available:
            continue
        examples, notes = _read_tfds_split(
            builder, split, text_field, label_field, label_order, spec, config
        )
        data.notes.extend(notes)
        if len(examples):
            data.splits[split] = examples
    return data


def _tfds_fields(info: Any, spec: DataSpec, config: DataConfig) -> tuple[str, str]:
    """Finds the text and label features from the dataset's own description.

    A `data.text_field` / `data.label_field` that names a feature wins; otherwise
    the dataset's supervised keys, otherwise its only text feature and its only
    `ClassLabel`.
    """
    import tensorflow_datasets as tfds

    features = info.features
    texts = [name for name, f in features.items() if isinstance(f, tfds.features.Text)]
    classes = [
        name for name, f in features.items() if isinstance(f, tfds.features.ClassLabel)
    ]
    supervised = info.supervised_keys
    if not (isinstance(supervised, tuple) and len(supervised) == 2):
        supervised = (None, None)
    text_field = _pick_feature(
        "text",
        config.text_field,
        DEFAULT_FIELDS.text_field,
        supervised[0],
        texts,
        list(features),
        spec,
    )
    label_field = _pick_feature(
        "label",
        config.label_field,
        DEFAULT_FIELDS.label_field,
        supervised[1],
        classes,
        list(features),
        spec,
    )
    if label_field not in classes:
        raise DataError(
            f"{spec}: feature '{label_field}' is not a ClassLabel, so it has no "
            "label names"
        )
    return text_field, label_field


def _pick_feature(
    role: str,
    configured: str,
    default: str,
    supervised: Any,
    candidates: list[str],
    all_features: list[str],
    spec: DataSpec,
) -> str:
    if configured in all_features:
        return configured
    if configured != default:
        raise DataError(
            f"{spec}: no {role} feature '{configured}'; the features are: "
            f"{', '.join(all_features)}"
        )
    if supervised in candidates:
        return supervised
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(
        f"{spec}: cannot tell which feature is the {role} (candidates: "
        f"{', '.join(candidates) or 'none'}); set data.{role}_field"
    )


def _read_tfds_split(
    builder: Any,
    split: str,
    text_field: str,
    label_field: str,
    label_order: list[str],
    spec: DataSpec,
    config: DataConfig,
) -> tuple[NamedExamples, list[str]]:
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(split=split, shuffle_files=False)
    dataset = dataset.map(lambda example: (example[text_field], example[label_field]))
    text_batches, label_batches = [], []
    for texts, labels in tfds.as_numpy(dataset.batch(TFDS_READ_BATCH)):
        text_batches.append(texts)
        label_batches.append(labels)
    if not text_batches:
        return NamedExamples(_object_array([]), _object_array([])), []
    raw_texts = np.concatenate(text_batches)
    label_ids = np.concatenate(label_batches).astype(np.int64)
    notes = []

    unlabelled = label_ids == UNLABELLED
    if unlabelled.any():
        notes.append(
            f"dropped {int(unlabelled.sum())} unlabelled examples (label -1) from "
            f"the {split} split of {spec}"
        )
    texts = _object_array([text.decode("utf-8") for text in raw_texts])
    empty = np.array([not text.strip() for text in texts], dtype=bool)
    if empty.any() and config.empty_text == "error":
        index = int(np.flatnonzero(empty)[0])
        raise DataError(
            f"{spec}: {split} example {index}: empty text (data.empty_text=error)"
        )
    if (empty & ~unlabelled).any():
        notes.append(
            f"skipped {int((empty & ~unlabelled).sum())} examples with empty text in "
            f"the {split} split of {spec}"
        )
    keep = ~(unlabelled | empty)
    names = np.asarray(label_order, dtype=object)[label_ids[keep]]
    return NamedExamples(texts[keep], names), notes
