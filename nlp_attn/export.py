"""Export for serving: a TensorFlow SavedModel that takes raw strings.

The last step of the flow (`nlp-attn export`): reads a finished run's model.keras
and writes `<run>/serving/`, which plain TensorFlow loads without nlp_attn.

The SavedModel's `serving_default` signature takes `text`, a string tensor
`[None]`, and returns `probabilities` (float32 `[None, classes]`), `label` (string
`[None]`) and, for models with `model.pooling=attention`, `attention` (float32
`[None, heads, max_length]`, 0 at padding); models that pool by mean or max have
no attention output. The tokenizer is part of the graph. A `words` tokenizer
uses only core TensorFlow ops; a `wordpiece` one uses TensorFlow Text ops, so a
process loading it must `import tensorflow_text` first.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nlp_attn import rundir, tokenize
from nlp_attn.errors import NlpAttnError, RunError
from nlp_attn.model import attention_model
from nlp_attn.predict import Run, load_model, load_run, predict_logits

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "text"
PARITY_TOLERANCE = 1e-5
PARITY_RANDOM_TEXTS = 48
PARITY_SEED = 0
SAVED_MODEL_FILE = "saved_model.pb"


class ParityError(NlpAttnError):
    """The exported model does not give the same answers as the run's model."""


@dataclasses.dataclass
class ExportResult:
    """What `export_saved_model` wrote and how closely it matches.

    Attributes:
        path: the SavedModel folder.
        inputs: input name -> `tf.TensorSpec` of the serving signature.
        outputs: output name -> `tf.TensorSpec` of the serving signature.
        differences: the largest absolute difference from the in-memory model's
            probabilities (and attention), per checked artifact.
        texts: how many texts the parity check used.
        needs_tensorflow_text: loading needs `import tensorflow_text`.
    """

    path: Path
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]
    differences: dict[str, float]
    texts: int
    needs_tensorflow_text: bool


def export_command(run: str | Path, out: str | Path | None = None) -> str:
    """Exports a run's model as a SavedModel for serving: `nlp-attn export`.

    Args:
        run: the run directory.
        out: the SavedModel folder to write; by default `<run>/serving`.

    Returns:
        What to print: where it wrote, the signature, the parity differences.

    Raises:
        RunError: the run is incomplete, its model.keras does not load, or `out`
            is something other than a previous export.
        ParityError: the export disagrees with the run's model; nothing is
            replaced.
    """
    loaded = load_run(run)
    target = Path(out) if out is not None else loaded.path / rundir.SERVING_DIR
    result = export_saved_model(loaded, target)
    return format_result(result)


def export_saved_model(
    run: Run, target: Path, tolerance: float = PARITY_TOLERANCE
) -> ExportResult:
    """Writes the serving SavedModel to `target`, atomically, after a parity check.

    The SavedModel is written to a temporary folder beside `target`, loaded back
    with `tf.saved_model.load`, and its probabilities (and attention) are compared
    with the in-memory model's on `parity_texts`; model.keras is reloaded and
    compared too. Only when both are within `tolerance` does the new folder
    replace `target`; otherwise the temporary folder is removed and a previous
    export at `target` stays as it was.

    Raises:
        RunError: `target` exists and is not a SavedModel folder.
        ParityError: a difference exceeds `tolerance`.
    """
    target = Path(target)
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        archive = serving_archive(run)
        archive.write_out(str(temporary), verbose=False)
        texts = parity_texts(run)
        differences = parity_differences(run, temporary, texts)
        worst = max(differences, key=differences.get)
        if not differences[worst] <= tolerance:
            raise ParityError(
                f"the exported {worst} differs from the run's model by "
                f"{differences[worst]:.3g} (tolerance {tolerance:g}); "
                f"{target} was not changed"
            )
        signature = tf.saved_model.load(str(temporary)).signatures[SIGNATURE_NAME]
        _replace_directory(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return ExportResult(
        path=target,
        inputs=signature.structured_input_signature[1],
        outputs=signature.structured_outputs,
        differences=differences,
        texts=len(texts),
        needs_tensorflow_text=_needs_tensorflow_text(run),
    )


def serving_archive(run: Run) -> keras.export.ExportArchive:
    """Builds the `serving_default` endpoint: raw strings in, see the module doc."""
    label_names = tf.constant(run.label_names, dtype=tf.string)
    tokenizer = run.tokenizer
    explainer = attention_model(run.classifier) if _has_attention(run) else None

    def serve(text: tf.Tensor) -> dict[str, tf.Tensor]:
        if explainer is None:
            logits = run.model(text, training=False)
            outputs = {}
        else:
            answer = explainer(tokenizer(text), training=False)
            logits = answer["logits"]
            outputs = {"attention": tf.cast(answer["attention"], tf.float32)}
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        outputs["probabilities"] = probabilities
        outputs["label"] = tf.gather(label_names, tf.argmax(probabilities, axis=-1))
        return outputs

    # The explainer shares the model's layers, so tracking the model covers both.
    archive = keras.export.ExportArchive()
    archive.track(run.model)
    archive.add_endpoint(
        SIGNATURE_NAME,
        serve,
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)],
    )
    return archive


def parity_texts(run: Run, count: int = PARITY_RANDOM_TEXTS) -> list[str]:
    """Texts for the parity check, made from the run's own vocabulary.

    Fixed edge cases (empty, whitespace, non-ASCII, longer than `max_length`)
    and `count` texts of random vocabulary entries, seeded so every export
    checks the same texts.
    """
    words = [
        token
        for token in tokenize.vocabulary(run.tokenizer)
        if token and not (token.startswith("[") and token.endswith("]"))
    ] or ["text"]
    generator = np.random.default_rng(PARITY_SEED)
    texts = ["", "   ", "naïve café — 日本語 ☃ 🙂", " ".join(words * 3)[:20_000]]
    for _ in range(count):
        length = int(generator.integers(1, run.max_length + 8))
        texts.append(" ".join(generator.choice(words, size=length)))
    return texts


def parity_differences(
    run: Run, saved_model: Path, texts: list[str]
) -> dict[str, float]:
    """Largest absolute differences from the in-memory model, per artifact.

    Returns:
        `{"SavedModel probabilities": ..., "model.keras probabilities": ...}` and,
        for attention models, `"SavedModel attention"`.
    """
    expected = tf.nn.softmax(predict_logits(run.model, texts), axis=-1).numpy()
    served = tf.saved_model.load(str(saved_model)).signatures[SIGNATURE_NAME](
        **{INPUT_NAME: tf.constant(texts, dtype=tf.string)}
    )
    reloaded = load_model(run.path / rundir.MODEL_FILE)
    from_file = tf.nn.softmax(predict_logits(reloaded, texts), axis=-1).numpy()
    differences = {
        "SavedModel probabilities": _largest_difference(
            served["probabilities"], expected
        ),
        "model.keras probabilities": _largest_difference(from_file, expected),
    }
    if _has_attention(run):
        tokens = run.tokenizer(tf.constant(texts, dtype=tf.string))
        attention = attention_model(run.classifier)(tokens, training=False)["attention"]
        differences["SavedModel attention"] = _largest_difference(
            served["attention"], attention
        )
    return differences


def format_result(result: ExportResult) -> str:
    """The lines `nlp-attn export` prints."""
    lines = [f"wrote SavedModel {result.path}", f"signature {SIGNATURE_NAME}:"]
    for kind, specs in (("input ", result.inputs), ("output", result.outputs)):
        for name, spec in specs.items():
            lines.append(f"  {kind} {name}: {spec.dtype.name} {spec.shape}")
    checks = ", ".join(
        f"{name} {difference:.2g}" for name, difference in result.differences.items()
    )
    lines.append(
        f"parity on {result.texts} texts (largest absolute difference from the "
        f"run's model): {checks}"
    )
    if result.needs_tensorflow_text:
        lines.append(
            "note: the wordpiece tokenizer uses TensorFlow Text ops; run "
            "`import tensorflow_text` before tf.saved_model.load"
        )
    lines.append(
        f'load: tf.saved_model.load("{result.path}").signatures["{SIGNATURE_NAME}"]'
        f'({INPUT_NAME}=tf.constant(["some text"]))'
    )
    return "\n".join(lines)


def _has_attention(run: Run) -> bool:
    return run.config.model.pooling == "attention"


def _needs_tensorflow_text(run: Run) -> bool:
    return not isinstance(run.tokenizer, keras.layers.TextVectorization)


def _largest_difference(actual, expected) -> float:
    """The largest absolute difference; NaN where only one side is NaN.

    A NaN on both sides counts as agreement: the export reproduces the model,
    whatever the model gives (mean pooling of a text without tokens, say).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    both_nan = np.isnan(actual) & np.isnan(expected)
    differences = np.abs(np.where(both_nan, 0.0, actual - expected))
    if np.isnan(differences).any():
        return float("nan")
    return float(differences.max(initial=0.0))


def _check_replaceable(target: Path) -> None:
    """Refuses to replace anything but a previous export (or an empty folder)."""
    if not target.exists():
        return
    if not target.is_dir():
        raise RunError(f"cannot export to {target}: it exists and is not a folder")
    if any(target.iterdir()) and not (target / SAVED_MODEL_FILE).is_file():
        raise RunError(
            f"cannot export to {target}: it is a folder with other content, not a "
            "previous export"
        )


def _replace_directory(new: Path, target: Path) -> None:
    """Moves `new` to `target`, replacing a previous `target` folder.

    Two renames in the same parent folder: the old folder is moved aside first,
    and moved back if the second rename fails, then deleted.
    """
    if not target.exists():
        os.replace(new, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
    os.rmdir(aside)
    os.replace(target, aside)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
