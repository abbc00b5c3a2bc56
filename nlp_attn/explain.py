"""Per-token attention for texts: which tokens the attention pooling weighed most.

Reads a finished run (after `train`), for `nlp-attn explain` in the terminal or as
an HTML page; `evaluate` uses it for the worst mistakes of its report.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from html import escape
from pathlib import Path

import numpy as np
import tensorflow as tf

from nlp_attn import rundir, tokenize
from nlp_attn.errors import NlpAttnError
from nlp_attn.model import attention_model
from nlp_attn.predict import (
    PREDICTION_BATCH_SIZE,
    Run,
    load_run,
    preview,
    truncation_note,
)

# ANSI 256-colour backgrounds from pale yellow to red, for weights from 0 to the
# strongest weight of the row; the foreground is black on all of them.
TERMINAL_RAMP = (230, 229, 228, 227, 226, 220, 214, 208, 202, 196)
TERMINAL_FOREGROUND = 16
HTML_COLOUR = "255, 140, 0"
PAGE_TITLE = "nlp_attn: attention per token"


@dataclasses.dataclass
class Explanation:
    """One text, the model's answer and the attention each of its tokens got.

    Attributes:
        text: the raw text.
        label: the predicted label name.
        probabilities: float32 `(classes,)`.
        tokens: the display tokens of its non-padding token ids, in order.
        attention: float32 `(heads, len(tokens))`; each row sums to 1 (or is
            all 0 for a text without tokens).
        truncated: True when the text had more tokens than `data.max_length`.
    """

    text: str
    label: str
    probabilities: np.ndarray
    tokens: list[str]
    attention: np.ndarray
    truncated: bool

    @property
    def confidence(self) -> float:
        return float(self.probabilities.max())


def explain_command(
    run: str | Path, texts: Sequence[str], html: str | None = None
) -> str:
    """Shows the attention of a run's model on texts: `nlp-attn explain`.

    Colours need a terminal: when standard output is a TTY and `NO_COLOR` is not
    set, tokens get an ANSI 256-colour background whose strength follows their
    weight; otherwise each token is printed as `token(0.123)`.

    Args:
        run: the run directory.
        texts: the texts to explain.
        html: also write a self-contained HTML page to this path.

    Returns:
        The text to print.

    Raises:
        NlpAttnError: the run's model does not pool with attention.
        RunError: the run directory is missing or incomplete.
    """
    loaded = load_run(run)
    explanations = explain_texts(loaded, texts)
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    lines = [format_terminal(explanations, loaded.max_length, colour=colour)]
    if html:
        path = Path(html)
        title = f"{PAGE_TITLE} ({loaded.path.name})"
        rundir.atomic_write_text(path, format_html(explanations, title))
        lines.append(f"wrote {path}")
    return "\n".join(lines)


def explain_texts(
    run: Run, texts: Sequence[str], batch_size: int = PREDICTION_BATCH_SIZE
) -> list[Explanation]:
    """Computes the label and per-token attention of each text, in batches.

    Raises:
        NlpAttnError: the run's model does not pool with attention.
    """
    texts = [str(text) for text in texts]
    explainer = attention_explainer(run)
    tokenizer = run.tokenizer
    explanations = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        token_ids = tokenizer(tf.constant(batch, dtype=tf.string))
        outputs = explainer(token_ids, training=False)
        probabilities = tf.nn.softmax(outputs["logits"], axis=-1).numpy()
        attention = np.asarray(outputs["attention"], dtype=np.float32)
        tokens = tokenize.token_strings(tokenizer, batch)
        lengths = tokenize.token_lengths(tokenizer, batch)
        for row, text in enumerate(batch):
            explanations.append(
                Explanation(
                    text=text,
                    label=run.label_names[int(probabilities[row].argmax())],
                    probabilities=probabilities[row],
                    tokens=tokens[row],
                    attention=attention[row, :, : len(tokens[row])],
                    truncated=bool(lengths[row] > run.max_length),
                )
            )
    return explanations


def attention_explainer(run: Run):
    """The run's classifier re-traced to also give attention (`model.attention_model`).

    Raises:
        NlpAttnError: the model does not pool with attention.
    """
    pooling = run.config.model.pooling
    if pooling != "attention":
        raise NlpAttnError(
            "attention weights exist only for model.pooling=attention; this run "
            f"({run.path}) was trained with model.pooling={pooling}"
        )
    try:
        return attention_model(run.classifier)
    except ValueError as error:
        raise NlpAttnError(f"cannot read attention from {run.path}: {error}") from None


def format_terminal(
    explanations: Sequence[Explanation], max_length: int, colour: bool = False
) -> str:
    """Formats explanations for a terminal, one block per text.

    Args:
        explanations: from `explain_texts`.
        max_length: the run's `data.max_length`, for the truncation note.
        colour: shade tokens with ANSI 256-colour backgrounds instead of writing
            their weights.
    """
    blocks = []
    for number, explanation in enumerate(explanations, start=1):
        lines = [
            f"{number}. {explanation.label} ({explanation.confidence:.3f})  "
            f"{preview(explanation.text)}"
        ]
        heads = explanation.attention.shape[0]
        for head in range(heads):
            name = f"head {head + 1}: " if heads > 1 else ""
            tokens = _terminal_tokens(
                explanation.tokens, explanation.attention[head], colour
            )
            lines.append(f"   {name}{tokens}")
        if explanation.truncated:
            lines.append("   " + truncation_note(1, max_length))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_html(explanations: Sequence[Explanation], title: str) -> str:
    """Formats explanations as a self-contained HTML page.

    Everything is inline (CSS included; no scripts, fonts or images), and every
    text and token is escaped. A token's background opacity is its weight
    relative to the strongest token of its row; hovering shows the weight.
    """
    sections = [
        _html_section(number, item) for number, item in enumerate(explanations, 1)
    ]
    return _HTML_PAGE.format(title=escape(title), body="\n".join(sections))


def _terminal_tokens(tokens: list[str], weights: np.ndarray, colour: bool) -> str:
    if not tokens:
        return "(no tokens)"
    if not colour:
        return " ".join(
            f"{token}({weight:.3f})"
            for token, weight in zip(tokens, weights, strict=True)
        )
    strengths = _relative(weights)
    last = len(TERMINAL_RAMP) - 1
    shaded = []
    for token, strength in zip(tokens, strengths, strict=True):
        background = TERMINAL_RAMP[round(strength * last)]
        shaded.append(
            f"\033[38;5;{TERMINAL_FOREGROUND};48;5;{background}m{token}\033[0m"
        )
    return " ".join(shaded)


def _relative(weights: np.ndarray) -> np.ndarray:
    """Weights divided by the row's largest, so the strongest token is 1."""
    strongest = float(weights.max(initial=0.0))
    if strongest <= 0.0:
        return np.zeros_like(weights)
    return np.clip(weights / strongest, 0.0, 1.0)


def _html_section(number: int, explanation: Explanation) -> str:
    heads = explanation.attention.shape[0]
    rows = []
    for head in range(heads):
        weights = explanation.attention[head]
        strengths = _relative(weights)
        spans = " ".join(
            f'<span class="token" style="background: rgba({HTML_COLOUR}, '
            f'{strength:.3f})" title="{weight:.4f}">{escape(token)}</span>'
            for token, weight, strength in zip(
                explanation.tokens, weights, strengths, strict=True
            )
        )
        name = f'<span class="head">head {head + 1}</span> ' if heads > 1 else ""
        rows.append(f'<p class="tokens">{name}{spans or "(no tokens)"}</p>')
    note = (
        '<p class="note">Longer than the model&#x27;s max_length: only the first '
        "tokens were seen.</p>"
        if explanation.truncated
        else ""
    )
    return (
        f'<section>\n<h2>{number}. <span class="label">'
        f"{escape(explanation.label)}</span> "
        f"({explanation.confidence:.3f})</h2>\n"
        f"<blockquote>{escape(explanation.text)}</blockquote>\n"
        + "\n".join(rows)
        + note
        + "\n</section>"
    )


_HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto;
  padding: 0 1em; color: #222; }}
h2 {{ font-size: 1.1em; margin-bottom: 0.3em; }}
blockquote {{ margin: 0.3em 0; color: #555; white-space: pre-wrap; }}
.tokens {{ line-height: 2; }}
.token {{ padding: 0.1em 0.25em; border-radius: 0.2em; }}
.head {{ font-size: 0.8em; color: #777; margin-right: 0.5em; }}
.note {{ font-size: 0.85em; color: #a33; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>Background strength: a token&#x27;s attention weight relative to the strongest
token of its row. Hover over a token for its weight.</p>
{body}
</body>
</html>
"""
