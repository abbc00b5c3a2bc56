"""Typed configuration: YAML files, `--set KEY=VALUE` overrides and validation.

The first step of the flow: every other stage reads its settings from a `Config`,
and the resolved config is saved as `config.yaml` in the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from nlp_attn.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


@dataclasses.dataclass
class DataConfig:
    """Where the examples come from and how they are split.

    `train`, `validation` and `test` are data specs (`default`, `tfds:NAME[/CONFIG]`,
    `csv:PATH`, `tsv:PATH`, `jsonl:PATH`, `dir:PATH`). An empty `validation` or
    `test` means: use the training source's own split of that name, or carve one
    from the training examples (stratified, seeded) when the source has none.
    """

    train: str = "default"
    validation: str = ""
    test: str = ""
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    max_length: int = 64
    text_field: str = "text"
    label_field: str = "label"
    data_dir: str = ""
    manual_dir: str = ""
    limit: int = 0
    empty_text: Literal["skip", "error"] = "skip"


@dataclasses.dataclass
class TokenizerConfig:
    """How texts become token ids (the vocabulary is learned from `train` only)."""

    kind: Literal["words", "wordpiece"] = "words"
    vocabulary_size: int = 20000
    ngrams: int = 1
    lowercase: bool = True
    strip_punctuation: bool = True


@dataclasses.dataclass
class ModelConfig:
    """The classifier: embedding, optional encoder, pooling and the head."""

    embedding_dim: int = 64
    pooling: Literal["attention", "mean", "max"] = "attention"
    attention_heads: int = 1
    position_embedding: bool = False
    encoder_layers: int = 0
    encoder_heads: int = 2
    encoder_intermediate_dim: int = 128
    hidden_layers: int = 1
    hidden_units: int = 64
    activation: str = "relu"
    dropout: float = 0.2


@dataclasses.dataclass
class TrainConfig:
    """The optimisation loop and where it runs."""

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 3e-3
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    warmup_fraction: float = 0.0
    weight_decay: float = 0.0
    early_stopping_patience: int = 3
    seed: int = 1337
    mixed_precision: Literal["none", "mixed_float16", "mixed_bfloat16"] = "none"
    strategy: Literal["auto", "mirrored", "multi_worker"] = "auto"
    jit_compile: Literal["auto", "on", "off"] = "auto"
    log_every_steps: int = 50
    profile_steps: str = ""
    summary_texts: int = 6


@dataclasses.dataclass
class RunConfig:
    """Where the run directory goes: `<dir>/<timestamp>-<name>/`."""

    dir: str = "runs"
    name: str = "default"


@dataclasses.dataclass
class Config:
    """The whole configuration of a run, one section per stage of the flow."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Returns the config as plain nested dicts, ready for YAML or JSON."""
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Loads a YAML config, applies `KEY=VALUE` overrides and validates the result.

    Args:
        path: a YAML file; `None` reads `configs/default.yaml` when it exists and
            otherwise starts from the built-in defaults.
        overrides: strings such as `"train.epochs=3"`, applied in order.

    Returns:
        A validated `Config`.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, a value has
            the wrong type or is out of range.
    """
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    values = _read_yaml(Path(path)) if path is not None else {}
    config = config_from_dict(values, source=str(path) if path else "defaults")
    for override in overrides:
        key, value = _parse_override(override)
        set_value(config, key, value)
    validate(config)
    return config


def config_from_dict(values: Any, source: str = "config") -> Config:
    """Builds a `Config` from nested dicts, checking every key and type."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {values!r}")
    config = Config()
    for section_name, section_values in values.items():
        section = _section(config, section_name)
        if section_values is None:
            continue
        if not isinstance(section_values, dict):
            raise ConfigError(
                f"{source}: section '{section_name}' must be a mapping, "
                f"got {section_values!r}"
            )
        for key, value in section_values.items():
            _assign(section, f"{section_name}.{key}", key, value)
    return config


def set_value(config: Config, dotted_key: str, value: Any) -> None:
    """Sets `section.key` to `value` (a string is parsed as YAML), type-checked."""
    section_name, _, key = dotted_key.partition(".")
    section = _section(config, section_name)
    if not key:
        raise ConfigError(
            f"'{dotted_key}' is a section; set a key such as "
            f"'{section_name}.{_field_names(section)[0]}'"
        )
    if isinstance(value, str):
        value = _parse_typed(section, key, value)
    _assign(section, dotted_key, key, value)


def _parse_typed(section: Any, key: str, text: str) -> Any:
    """Parses an override's text as YAML, except for keys that hold strings."""
    hints = typing.get_type_hints(type(section))
    hint = hints.get(key)
    literal_strings = typing.get_origin(hint) is Literal and all(
        isinstance(choice, str) for choice in typing.get_args(hint)
    )
    if hint is str or literal_strings:
        return text
    # A value that is not YAML (say, "a: b: c") stays the string typed.
    with contextlib.suppress(yaml.YAMLError):
        return yaml.safe_load(text) if text.strip() else ""
    return text


def save_config(config: Config, path: str | Path) -> None:
    """Writes the resolved config as YAML that `load_config` reads back unchanged."""
    from nlp_attn.rundir import atomic_write_text

    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write_text(Path(path), text)


def validate(config: Config) -> None:
    """Checks value ranges that types alone cannot express."""
    positive = {
        "data.max_length": config.data.max_length,
        "tokenizer.vocabulary_size": config.tokenizer.vocabulary_size,
        "tokenizer.ngrams": config.tokenizer.ngrams,
        "model.embedding_dim": config.model.embedding_dim,
        "model.attention_heads": config.model.attention_heads,
        "model.encoder_heads": config.model.encoder_heads,
        "model.encoder_intermediate_dim": config.model.encoder_intermediate_dim,
        "model.hidden_units": config.model.hidden_units,
        "train.epochs": config.train.epochs,
        "train.batch_size": config.train.batch_size,
        "train.log_every_steps": config.train.log_every_steps,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    non_negative = {
        "data.limit": config.data.limit,
        "model.encoder_layers": config.model.encoder_layers,
        "model.hidden_layers": config.model.hidden_layers,
        "train.early_stopping_patience": config.train.early_stopping_patience,
        "train.summary_texts": config.train.summary_texts,
        "train.weight_decay": config.train.weight_decay,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must not be negative, got {value}")
    fractions = {
        "data.validation_fraction": config.data.validation_fraction,
        "data.test_fraction": config.data.test_fraction,
        "model.dropout": config.model.dropout,
        "train.warmup_fraction": config.train.warmup_fraction,
    }
    for key, value in fractions.items():
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {value}")
    if config.data.validation_fraction + config.data.test_fraction >= 1.0:
        raise ConfigError(
            "data.validation_fraction + data.test_fraction must be below 1, got "
            f"{config.data.validation_fraction + config.data.test_fraction}"
        )
    if config.train.learning_rate <= 0:
        raise ConfigError(
            f"train.learning_rate must be positive, got {config.train.learning_rate}"
        )
    if config.tokenizer.vocabulary_size < 3:
        raise ConfigError(
            "tokenizer.vocabulary_size must be at least 3 (padding, unknown and one "
            f"token), got {config.tokenizer.vocabulary_size}"
        )
    if not config.data.train:
        raise ConfigError("data.train must name a data spec, got an empty value")
    if config.model.encoder_layers and (
        config.model.embedding_dim % config.model.encoder_heads
    ):
        raise ConfigError(
            f"model.embedding_dim ({config.model.embedding_dim}) must be divisible "
            f"by model.encoder_heads ({config.model.encoder_heads})"
        )
    if config.train.profile_steps:
        _parse_profile_steps(config.train.profile_steps)
    if not config.run.name or "/" in config.run.name:
        raise ConfigError(
            f"run.name must be a non-empty name without '/', got {config.run.name!r}"
        )


def profile_steps(config: Config) -> tuple[int, int] | None:
    """Returns `train.profile_steps` as a `(first, last)` batch range, or None."""
    if not config.train.profile_steps:
        return None
    return _parse_profile_steps(config.train.profile_steps)


def _parse_profile_steps(text: str) -> tuple[int, int]:
    first, sep, last = str(text).partition(",")
    try:
        start, stop = int(first), int(last if sep else first)
    except ValueError:
        start, stop = -1, -1
    if start < 1 or stop < start:
        raise ConfigError(
            f"train.profile_steps must be 'FIRST,LAST' batches (1-based), got {text!r}"
        )
    return start, stop


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        reason = str(error).replace("\n", " ")
        raise ConfigError(f"config file {path} is not valid YAML: {reason}") from None


def _parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    return key.strip(), value


def _section(config: Config, name: str) -> Any:
    names = _field_names(config)
    if name not in names:
        raise ConfigError(f"unknown config section '{name}'{_suggest(name, names)}")
    return getattr(config, name)


def _field_names(obj: Any) -> list[str]:
    return [field.name for field in dataclasses.fields(obj)]


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _assign(section: Any, dotted_key: str, key: str, value: Any) -> None:
    names = _field_names(section)
    if key not in names:
        prefix = dotted_key.rsplit(".", 1)[0]
        candidates = [f"{prefix}.{name}" for name in names]
        all_keys = candidates + _all_keys()
        raise ConfigError(
            f"unknown config key '{dotted_key}'{_suggest(dotted_key, all_keys)}"
        )
    hint = typing.get_type_hints(type(section))[key]
    setattr(section, key, _coerce(dotted_key, value, hint))


def _all_keys() -> list[str]:
    config = Config()
    return [
        f"{section}.{key}"
        for section in _field_names(config)
        for key in _field_names(getattr(config, section))
    ]


def _coerce(dotted_key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            # YAML 1.1 reads a bare on/off in a config file as a boolean.
            value = "on" if value else "off"
        if value not in choices:
            options = ", ".join(str(choice) for choice in choices)
            raise ConfigError(
                f"{dotted_key} must be one of {options}; got {value!r}"
                f"{_suggest(str(value), [str(choice) for choice in choices])}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type for {dotted_key}: {hint}")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads "1e-3" (no dot) as a string; Python reads it as a float.
            with contextlib.suppress(ValueError):
                return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(
        f"{dotted_key} must be {hint.__name__}, got {type(value).__name__} {value!r}"
    )
