"""Starts a real TensorBoard on the logs of a tiny training run and reads them back.

Checks, through TensorBoard's HTTP data API, that what training logs (the Keras
TensorBoard callback plus `nlp_attn.summaries`) is what its dashboards will show.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest

from nlp_attn import summaries

# keras.callbacks.TensorBoard (Keras 3.15) turns the learning-rate variable into a
# NumPy value in a way NumPy 2 deprecates; the warning is Keras', not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

HOST = "127.0.0.1"
STARTUP_SECONDS = 60
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOCABULARY = ["", "[UNK]", "good", "fun", "great", "bad", "dull", "awful", "the", "a"]
SEQUENCE_LENGTH = 6
EPOCHS = 2
BATCH_SIZE = 5
LOG_EVERY_STEPS = 2
LEARNING_RATE = 0.01


def uniform_attention(token_ids):
    """Equal weight on every real token: `(rows, 1, sequence)`."""
    real = (token_ids != 0).astype(np.float32)
    return (real / np.maximum(real.sum(axis=1, keepdims=True), 1.0))[:, None, :]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("run") / "logs"


@pytest.fixture(scope="module")
def tensorboard_process(log_dir, tmp_path_factory):
    """Starts TensorBoard on a free local port; yields (process, base URL, output).

    It starts before training so that its start-up (seconds of importing
    TensorFlow) overlaps the fit; it reloads the logs every second.
    """
    log_dir.mkdir(parents=True)
    port = _free_port()
    output = tmp_path_factory.mktemp("tensorboard") / "output.log"
    executable = Path(sys.executable).with_name("tensorboard")
    command = (
        [str(executable)]
        if executable.exists()
        else [sys.executable, "-m", "tensorboard.main"]
    )
    command += [
        f"--logdir={log_dir}",
        f"--host={HOST}",
        f"--port={port}",
        "--load_fast=false",
        "--reload_interval=1",
    ]
    with open(output, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, f"http://{HOST}:{port}", output
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def trained_run(log_dir, tensorboard_process):
    """Fits a 20-example model with both callbacks; returns what it logged."""
    rng = np.random.default_rng(7)
    token_ids = rng.integers(2, len(VOCABULARY), (20, SEQUENCE_LENGTH)).astype(np.int32)
    for row, length in enumerate(rng.integers(2, SEQUENCE_LENGTH + 1, 20)):
        token_ids[row, length:] = 0
    labels = (np.isin(token_ids, [2, 3, 4]).sum(axis=1) >= 2).astype(np.int32)

    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((SEQUENCE_LENGTH,), dtype="int32"),
            keras.layers.Embedding(len(VOCABULARY), 4, mask_zero=True),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    sample_ids = token_ids[:3]
    tokens = [[VOCABULARY[i] for i in row if i != 0] for row in sample_ids]
    callbacks = [
        keras.callbacks.TensorBoard(str(log_dir), histogram_freq=1),
        summaries.AttentionSummaries(
            log_dir,
            texts=[" ".join(row) for row in tokens],
            token_ids=sample_ids,
            tokens=tokens,
            attention_fn=uniform_attention,
            validation_token_ids=token_ids,
            vocabulary=VOCABULARY,
            log_every_steps=LOG_EVERY_STEPS,
        ),
    ]
    history = model.fit(
        token_ids,
        labels,
        validation_data=(token_ids, labels),
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        callbacks=callbacks,
        verbose=0,
    )

    embeddings = model.layers[0].embeddings.numpy()
    summaries.write_projector(log_dir, embeddings, VOCABULARY)
    final_accuracy = history.history["val_accuracy"][-1]
    summaries.write_hparams(
        log_dir,
        {"train": {"learning_rate": LEARNING_RATE, "epochs": EPOCHS}},
        {"val_accuracy": final_accuracy},
    )
    return {
        "history": history.history,
        "embeddings": embeddings,
        "steps": EPOCHS * len(token_ids) // BATCH_SIZE,
    }


@pytest.fixture(scope="module")
def tensorboard(tensorboard_process, trained_run):
    """The base URL, once TensorBoard serves everything the run logged."""
    process, base_url, output = tensorboard_process
    _wait_until_loaded(process, base_url, output, trained_run["steps"])
    return base_url


def test_scalars(tensorboard, trained_run):
    tags = get_json(tensorboard, "/data/plugin/scalars/tags")
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(tags["train"])
    assert {"learning_rate", "batch_loss"} <= set(tags["train"])
    assert {"epoch_loss", "epoch_accuracy"} <= set(tags["validation"])

    history = trained_run["history"]
    epoch_loss = get_json(
        tensorboard, "/data/plugin/scalars/scalars", run="train", tag="epoch_loss"
    )
    assert [step for _, step, _ in epoch_loss] == list(range(EPOCHS))
    assert [value for _, _, value in epoch_loss] == pytest.approx(history["loss"])
    validation_accuracy = get_json(
        tensorboard,
        "/data/plugin/scalars/scalars",
        run="validation",
        tag="epoch_accuracy",
    )
    assert validation_accuracy[-1][2] == pytest.approx(history["val_accuracy"][-1])

    learning_rate = get_json(
        tensorboard, "/data/plugin/scalars/scalars", run="train", tag="learning_rate"
    )
    assert [step for _, step, _ in learning_rate] == list(
        range(LOG_EVERY_STEPS, trained_run["steps"] + 1, LOG_EVERY_STEPS)
    )
    rates = [value for _, _, value in learning_rate]
    assert rates == pytest.approx([LEARNING_RATE] * len(rates))


def test_histograms(tensorboard):
    tags = get_json(tensorboard, "/data/plugin/histograms/tags")
    embedding_tags = [tag for tag in tags["train"] if "embeddings" in tag]
    assert len(embedding_tags) == 1

    histograms = get_json(
        tensorboard,
        "/data/plugin/histograms/histograms",
        run="train",
        tag=embedding_tags[0],
    )
    assert [step for _, step, _ in histograms] == list(range(EPOCHS))


def test_attention_heatmaps(tensorboard):
    tags = get_json(tensorboard, "/data/plugin/images/tags")
    assert tags["attention"]["attention/heatmaps"]["samples"] == 3

    images = get_json(
        tensorboard,
        "/data/plugin/images/images",
        run="attention",
        tag="attention/heatmaps",
        sample=2,
    )
    assert [image["step"] for image in images] == list(range(EPOCHS))
    png = get(tensorboard, "/data/plugin/images/individualImage?" + images[-1]["query"])
    assert png.startswith(PNG_SIGNATURE)


def test_attention_texts(tensorboard):
    tags = get_json(tensorboard, "/data/plugin/text/tags")
    assert set(tags["attention"]) == {"attention/tokens", "attention/top_tokens"}

    tokens = get_json(
        tensorboard, "/data/plugin/text/text", run="attention", tag="attention/tokens"
    )
    assert [entry["step"] for entry in tokens] == list(range(EPOCHS))
    assert tokens[-1]["text"].count("<table>") == 3
    assert "<th>attention</th>" in tokens[-1]["text"]

    top_tokens = get_json(
        tensorboard,
        "/data/plugin/text/text",
        run="attention",
        tag="attention/top_tokens",
    )
    assert "<th>mean attention</th>" in top_tokens[-1]["text"]


def test_projector(tensorboard, trained_run):
    assert get_json(tensorboard, "/data/plugin/projector/runs") == ["projector"]

    info = get_json(tensorboard, "/data/plugin/projector/info", run="projector")
    (embedding,) = info["embeddings"]
    embeddings = trained_run["embeddings"]
    assert embedding["tensorShape"] == list(embeddings.shape)
    assert embedding["metadataPath"] == "metadata.tsv"

    name = embedding["tensorName"]
    metadata = get(
        tensorboard, "/data/plugin/projector/metadata", run="projector", name=name
    )
    assert metadata.decode().splitlines() == ["[PAD]", *VOCABULARY[1:]]
    tensor = get(
        tensorboard, "/data/plugin/projector/tensor", run="projector", name=name
    )
    np.testing.assert_allclose(
        np.frombuffer(tensor, dtype=np.float32).reshape(embeddings.shape), embeddings
    )


def test_hparams(tensorboard, trained_run):
    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
        "startIndex": 0,
        "sliceSize": 10,
        "includeMetrics": True,
    }
    response = post_json(tensorboard, "/data/plugin/hparams/session_groups", request)

    (group,) = response["sessionGroups"]
    assert group["hparams"] == {
        "train.learning_rate": pytest.approx(LEARNING_RATE),
        "train.epochs": EPOCHS,
    }
    (metric,) = group["metricValues"]
    assert metric["name"]["tag"] == "val_accuracy"
    assert metric["value"] == pytest.approx(trained_run["history"]["val_accuracy"][-1])


def get(base_url, path, **params):
    url = base_url + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def get_json(base_url, path, **params):
    return json.loads(get(base_url, path, **params))


def post_json(base_url, path, body):
    request = urllib.request.Request(
        base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _wait_until_loaded(process, base_url, output, steps):
    """Polls until the last values of the run are served; fails on exit or stall.

    Training wrote while TensorBoard was starting, so it is done loading when the
    last records of each writer are there.
    """
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"TensorBoard exited early:\n{output.read_text()[-3000:]}")
        if _serves_everything(base_url, steps):
            return
        time.sleep(0.5)
    pytest.fail(
        f"TensorBoard did not serve the logs within {STARTUP_SECONDS} s:\n"
        + output.read_text()[-3000:]
    )


def _serves_everything(base_url, steps):
    """Whether the last record of every series the run wrote is served."""
    try:
        histogram_tags = get_json(base_url, "/data/plugin/histograms/tags")
        series = [
            ("scalars", "train", "learning_rate", steps // LOG_EVERY_STEPS),
            ("scalars", "train", "epoch_loss", EPOCHS),
            ("scalars", "validation", "epoch_loss", EPOCHS),
            ("text", "attention", "attention/top_tokens", EPOCHS),
            ("images", "attention", "attention/heatmaps", EPOCHS),
            ("scalars", "hparams", "val_accuracy", 1),
            *[
                ("histograms", "train", tag, EPOCHS)
                for tag in histogram_tags.get("train", {})
            ],
        ]
        return "train" in histogram_tags and all(
            len(get_json(base_url, f"/data/plugin/{plugin}/{plugin}", run=run, tag=tag))
            >= count
            for plugin, run, tag, count in series
        )
    except (OSError, ValueError):
        return False
