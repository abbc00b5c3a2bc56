"""Tests for `nlp-attn predict` and `nlp-attn explain` on a tiny trained run."""

import io
import json
import sys

import keras
import numpy as np
import pytest
import run_fixture
import tensorflow as tf

from nlp_attn import rundir
from nlp_attn.errors import DataError, NlpAttnError
from nlp_attn.explain import explain_command, explain_texts, format_terminal
from nlp_attn.predict import load_run, predict_command

UNICODE_TEXT = "Ein großartiger Film, très émouvant — 映画 🙂 great"
LONG_TEXT = " ".join(["great", "plot"] * 200)
TEXTS = ["", UNICODE_TEXT, LONG_TEXT]


class Terminal(io.StringIO):
    """A stand-in for standard output that says it is a TTY."""

    def isatty(self):
        return True


def model_probabilities(run, texts):
    model = keras.saving.load_model(run / rundir.MODEL_FILE)
    return tf.nn.softmax(model(tf.constant(texts)), axis=-1).numpy()


def test_predict_json_lines_for_empty_unicode_and_long_texts(run):
    output = predict_command(run, TEXTS, input=None, json=True)

    records = [json.loads(line) for line in output.splitlines()]
    label_names = rundir.read_labels(run)
    expected = model_probabilities(run, TEXTS)
    assert [record["text"] for record in records] == TEXTS
    assert [record["truncated"] for record in records] == [False, False, True]
    for record, probabilities in zip(records, expected, strict=True):
        assert list(record["probabilities"]) == label_names
        np.testing.assert_allclose(
            list(record["probabilities"].values()), probabilities, atol=1e-6
        )
        assert record["label"] == label_names[int(probabilities.argmax())]


def test_predict_table_marks_truncated_texts(run):
    output = predict_command(run, TEXTS, input=None, json=False)

    lines = output.splitlines()
    assert len(lines) == len(TEXTS) + 1
    assert "*great plot great plot" in lines[2]
    assert lines[-1].startswith("note: 1 text was (*) longer than data.max_length=16")
    assert '""' in lines[0]


def test_predict_reads_an_input_file_one_text_a_line(run, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("a superb film\n\nthe plot was dull\n", encoding="utf-8")

    output = predict_command(run, [], input=str(texts), json=True)

    records = [json.loads(line) for line in output.splitlines()]
    assert [record["text"] for record in records] == [
        "a superb film",
        "",
        "the plot was dull",
    ]
    for record in records:
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_reads_a_data_spec_and_rejects_a_missing_input(run, tmp_path):
    data = run_fixture.write_csv(tmp_path / "some.csv", rows=5, seed=3)

    records = predict_command(run, [], input=f"csv:{data}", json=True).splitlines()

    assert len(records) == 5
    with pytest.raises(DataError, match="no such file"):
        predict_command(run, [], input=str(tmp_path / "absent.txt"), json=False)


def test_explain_shows_each_head_with_weights_in_plain_text(run, monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())

    output = explain_command(run, ["the film was superb and moving", "", LONG_TEXT])

    blocks = output.split("\n\n")
    assert len(blocks) == 3
    assert "head 1: the(0." in blocks[0] and "head 2: the(0." in blocks[0]
    assert "superb(0." in blocks[0]
    assert "(no tokens)" in blocks[1]
    assert "truncated" not in blocks[0] and "longer than data.max_length" in blocks[2]
    assert "\033[" not in output


def test_explain_weights_cover_the_real_tokens_and_sum_to_one(run):
    loaded = load_run(run)

    explanations = explain_texts(loaded, ["the film was superb", UNICODE_TEXT, ""])

    assert explanations[0].tokens == ["the", "film", "was", "superb"]
    for explanation in explanations[:2]:
        assert explanation.attention.shape == (2, len(explanation.tokens))
        np.testing.assert_allclose(explanation.attention.sum(axis=1), 1.0, atol=1e-5)
    assert explanations[2].attention.shape == (2, 0)
    expected = model_probabilities(run, ["the film was superb"])[0]
    np.testing.assert_allclose(explanations[0].probabilities, expected, atol=1e-6)


def test_explain_colours_a_terminal_unless_no_color(run, monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = explain_command(run, ["the film was superb"])
    monkeypatch.setenv("NO_COLOR", "1")
    plain = explain_command(run, ["the film was superb"])

    assert "\033[38;5;16;48;5;" in coloured and "superb\033[0m" in coloured
    assert "(0." not in coloured.split("\n", 1)[1]
    assert "\033[" not in plain and "superb(0." in plain


def test_format_terminal_gives_the_strongest_token_the_strongest_colour(run):
    explanation = explain_texts(load_run(run), ["the film was superb"])[0]
    explanation.attention = np.array([[0.1, 0.2, 0.1, 0.6]], dtype=np.float32)

    output = format_terminal([explanation], max_length=16, colour=True)

    assert "48;5;196msuperb" in output and "48;5;230m" not in output


def test_explain_html_is_self_contained_and_escaped(run, tmp_path):
    page = tmp_path / "attention.html"
    texts = ["the film was superb", "<script>alert('x')</script> dull"]

    output = explain_command(run, texts, html=str(page))

    content = page.read_text(encoding="utf-8")
    assert f"wrote {page}" in output
    assert content.startswith("<!DOCTYPE html>") and "<style>" in content
    assert ">superb</span>" in content and ">dull</span>" in content
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in content
    assert "<script" not in content
    assert "http" not in content and "<link" not in content and "src=" not in content
    assert "head 2" in content


def test_explain_needs_attention_pooling(mean_run):
    with pytest.raises(NlpAttnError, match="model.pooling=attention"):
        explain_command(mean_run, ["the film was superb"])
