"""Tests for `nlp-attn evaluate`: metrics, report files, TensorBoard logs, errors."""

import json

import keras
import numpy as np
import pytest
import run_fixture
import tensorflow as tf
from matplotlib.image import imread
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nlp_attn import rundir
from nlp_attn.config import load_config
from nlp_attn.data import load_splits
from nlp_attn.errors import RunError
from nlp_attn.evaluate import evaluate_run, expected_calibration_error


def direct_metrics(run, texts, labels):
    """The report's metrics computed with numpy from the model's own logits."""
    model = keras.saving.load_model(run / rundir.MODEL_FILE)
    logits = np.asarray(model(tf.constant(list(texts))), dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    probabilities = np.exp(log_probabilities)
    predicted = probabilities.argmax(axis=1)
    classes = logits.shape[1]
    confusion = np.zeros((classes, classes), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    true_positives = np.diag(confusion).astype(float)
    precision = true_positives / np.maximum(confusion.sum(axis=0), 1)
    recall = true_positives / np.maximum(confusion.sum(axis=1), 1)
    both = precision + recall
    f1 = np.where(both > 0, 2 * precision * recall / np.where(both > 0, both, 1), 0)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "loss": float(-log_probabilities[np.arange(len(labels)), labels].mean()),
        "confusion": confusion,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "probabilities": probabilities,
    }


def calibration_by_loop(probabilities, labels, bins=15):
    """Expected calibration error written as the textbook loop over bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    total = 0.0
    for index in range(bins):
        low, high = index / bins, (index + 1) / bins
        inside = (confidence > low) & (confidence <= high)
        if index == 0:
            inside |= confidence == 0
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            total += inside.sum() / len(labels) * gap
    return total


def assert_report_matches(report, expected, label_names):
    assert report["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(expected["loss"], abs=1e-4)
    assert report["confusion_matrix"] == expected["confusion"].tolist()
    for index, name in enumerate(label_names):
        row = report["per_class"][name]
        assert row["precision"] == pytest.approx(expected["precision"][index], abs=1e-6)
        assert row["recall"] == pytest.approx(expected["recall"][index], abs=1e-6)
        assert row["f1"] == pytest.approx(expected["f1"][index], abs=1e-5)
        assert row["support"] == int(expected["confusion"][index].sum())
    assert report["macro_f1"] == pytest.approx(expected["f1"].mean(), abs=1e-5)


def test_evaluate_on_the_runs_test_split(run):
    summary = evaluate_run(run)

    report = json.loads((run / rundir.REPORT_JSON).read_text(encoding="utf-8"))
    config = load_config(run / rundir.CONFIG_FILE)
    test = load_splits(config.data, seed=config.train.seed).test
    label_names = rundir.read_labels(run)
    expected = direct_metrics(run, test.texts, test.labels)
    assert report["examples"] == len(test.labels)
    assert report["split"] == "test"
    assert report["data"] == config.data.train
    assert_report_matches(report, expected, label_names)
    assert report["expected_calibration_error"] == pytest.approx(
        calibration_by_loop(expected["probabilities"], test.labels), abs=1e-5
    )
    assert report["calibration_bins"] == 15
    assert f"accuracy {report['accuracy']:.4f}" in summary
    assert all(name in summary for name in label_names)

    image = imread(run / rundir.CONFUSION_MATRIX_IMAGE)
    assert image.shape[0] >= 300 and image.shape[1] >= 300

    markdown = (run / rundir.REPORT_MARKDOWN).read_text(encoding="utf-8")
    assert "## Most confident mistakes" in markdown
    assert f"| accuracy | {report['accuracy']:.4f} |" in markdown
    mistakes = int(expected["confusion"].sum() - np.trace(expected["confusion"]))
    assert len(report["worst_mistakes"]) == min(mistakes, 10)
    if mistakes:
        confidences = [item["confidence"] for item in report["worst_mistakes"]]
        assert confidences == sorted(confidences, reverse=True)
        assert "Head 1:" in markdown and "Head 2:" in markdown

    events = EventAccumulator(str(run / rundir.LOGS_DIR / "evaluation"))
    events.Reload()
    assert "test/confusion_matrix" in events.Tags()["tensors"]
    logged = events.Tensors("test/accuracy")[-1]
    assert tf.make_ndarray(logged.tensor_proto) == pytest.approx(report["accuracy"])


def test_evaluate_an_external_csv_writes_beside_out(run, tmp_path):
    label_names = rundir.read_labels(run)
    data = run_fixture.write_csv(tmp_path / "new.csv", rows=21, seed=99)
    out = tmp_path / "reports" / "new-data.json"

    evaluate_run(run, data=f"csv:{data}", out=out)

    report = json.loads(out.read_text(encoding="utf-8"))
    assert (out.parent / rundir.REPORT_MARKDOWN).is_file()
    assert (out.parent / rundir.CONFUSION_MATRIX_IMAGE).is_file()
    assert report["data"] == f"csv:{data}"
    assert report["examples"] == 21
    rows = [line.rsplit(",", 1) for line in data.read_text().splitlines()[1:]]
    texts = [text for text, _ in rows]
    labels = np.array([label_names.index(label) for _, label in rows])
    assert_report_matches(report, direct_metrics(run, texts, labels), label_names)


def test_unknown_label_is_one_line_and_exit_2(run, tmp_path, cli):
    data = tmp_path / "other.csv"
    data.write_text("text,label\ngreat film,positive\nso so,sarcastic\n")

    result = cli("evaluate", "--run", str(run), "--data", f"csv:{data}")

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "sarcastic" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_a_mean_pooling_run_lists_tokens_without_attention(mean_run):
    evaluate_run(mean_run)

    report = json.loads((mean_run / rundir.REPORT_JSON).read_text(encoding="utf-8"))
    markdown = (mean_run / rundir.REPORT_MARKDOWN).read_text(encoding="utf-8")
    assert set(report["per_class"]) == set(rundir.read_labels(mean_run))
    if report["worst_mistakes"]:
        assert "Tokens: " in markdown and "Head 1:" not in markdown


def test_unknown_split_and_missing_run_are_run_errors(run, tmp_path):
    with pytest.raises(RunError, match="not 'dev'"):
        evaluate_run(run, split="dev")
    with pytest.raises(RunError, match="not found"):
        evaluate_run(tmp_path / "missing")


def test_expected_calibration_error_of_known_cases():
    # Two examples in the (0.8667, 0.9333] bin, one right: |0.5 - 0.9| = 0.4;
    # one in the (0.5333, 0.6] bin, right: |1 - 0.6| = 0.4. Weighted: 0.4.
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    labels = np.array([0, 0, 0])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.4)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == 0.0
    generator = np.random.default_rng(0)
    random = generator.dirichlet([1.0, 1.0, 1.0], size=200)
    labels = generator.integers(0, 3, size=200)
    assert expected_calibration_error(random, labels) == pytest.approx(
        calibration_by_loop(random, labels)
    )
