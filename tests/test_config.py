"""Config loading, overrides and validation, in-process and through the CLI."""

import pytest

from nlp_attn.config import Config, load_config, save_config
from nlp_attn.errors import ConfigError


def test_defaults_file_loads_and_validates():
    config = load_config()
    assert isinstance(config, Config)
    assert config.data.train == "default"
    assert config.model.pooling == "attention"


def test_overrides_are_typed():
    config = load_config(
        None,
        [
            "train.epochs=3",
            "train.learning_rate=1e-3",
            "model.pooling=mean",
            "data.train=csv:some.csv",
            "tokenizer.lowercase=false",
        ],
    )
    assert config.train.epochs == 3
    assert config.train.learning_rate == pytest.approx(1e-3)
    assert config.model.pooling == "mean"
    assert config.data.train == "csv:some.csv"
    assert config.tokenizer.lowercase is False


def test_integer_is_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["train.learning_rate=1"]).train.learning_rate == 1.0
    with pytest.raises(ConfigError, match="train.epochs must be int"):
        load_config(None, ["train.epochs=1.5"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "did you mean 'train.epochs'"),
        ("trian.epochs=3", "did you mean 'train'"),
        ("model.embeding_dim=8", "did you mean 'model.embedding_dim'"),
        ("model.pooling=attn", "model.pooling must be one of attention, mean, max"),
        ("train.batch_size=-4", "train.batch_size must be positive, got -4"),
        ("model.embedding_dim=0", "model.embedding_dim must be positive"),
        ("tokenizer.kind=bpe", "tokenizer.kind must be one of words, wordpiece"),
        ("data.validation_fraction=1.5", "data.validation_fraction must be in"),
        ("train.epochs=three", "train.epochs must be int"),
        ("train.epochs", "--set expects KEY=VALUE"),
        ("train.mixed_precision=fp16", "train.mixed_precision must be one of"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(None, [override])


def test_unknown_key_in_file_suggests_nearest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'train.learning_rate'"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, ["train.epochs=2", "model.attention_heads=2"])
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert load_config(path) == config
    save_config(load_config(path), tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_text() == path.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
        (["--set", "train.batch_size=-1"], "train.batch_size must be positive"),
        (["--set", "model.pooling=sum"], "model.pooling must be one of"),
        (["--config", "does/not/exist.yaml"], "config file not found"),
    ],
)
def test_cli_config_errors_exit_2_with_one_line(cli, args, message):
    result = cli("audit", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_invalid_yaml_file_exits_2(cli, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: [unclosed\n")
    result = cli("train", "--config", str(path))
    assert result.returncode == 2
    assert "is not valid YAML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_missing_run_directory_exits_2(cli, tmp_path):
    result = cli("evaluate", "--run", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "run directory not found" in result.stderr
