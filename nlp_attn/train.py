"""The training run: data → tokenizer → model → audit → fit → run directory.

`train` is what `nlp-attn train` runs; `audit_config` is `nlp-attn audit`. Both
build the same model from the same data, so the audit checks what would train.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from nlp_attn import data, rundir, summaries, tokenize
from nlp_attn.audit import AuditReport, audit
from nlp_attn.config import Config, profile_steps, save_config
from nlp_attn.data.pipeline import make_dataset, tokenize_texts
from nlp_attn.errors import NlpAttnError, RunError
from nlp_attn.model import attention_model, build_classifier, end_to_end_model

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
BEST_WEIGHTS = "best.weights.h5"
SUMMARY_SAMPLE_ROWS = 2000


class AuditFailed(NlpAttnError):
    """The trainability audit found problems before training started."""

    def __init__(self, report: AuditReport):
        super().__init__(
            "the trainability audit found problems (--skip-audit to train)"
        )
        self.report = report


class TrainingDiverged(NlpAttnError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass
class Prepared:
    """Everything the model is built from: splits, tokenizer and their token ids."""

    splits: data.Splits
    tokenizer: keras.layers.Layer
    token_ids: dict[str, np.ndarray]


def train(
    config: Config,
    run_dir: str | Path | None = None,
    resume: bool = False,
    skip_audit: bool = False,
) -> str:
    """Trains the classifier `config` describes and fills a run directory.

    Args:
        config: the resolved config; saved as `config.yaml` in the run.
        run_dir: the run directory; by default a new `<run.dir>/<time>-<run.name>`.
        resume: continue `run_dir` from its last completed epoch.
        skip_audit: train even when the trainability audit finds problems.

    Returns:
        A short human summary of the run.

    Raises:
        AuditFailed: the audit found problems and `skip_audit` is false.
        TrainingDiverged: the loss became NaN.
        NlpAttnError: bad config, data or run directory.
    """
    started = time.perf_counter()
    run = _open_run_dir(config, run_dir, resume)
    _set_determinism(config.train.seed)
    previous_policy = keras.mixed_precision.global_policy()
    if config.train.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(config.train.mixed_precision)
    try:
        return _train_in_run(config, run, resume, skip_audit, started)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def audit_config(config: Config) -> AuditReport:
    """Audits the model that `config` would train, on a real batch of its data."""
    _set_determinism(config.train.seed)
    prepared = prepare_data(config)
    classifier = build_classifier(
        config, _vocabulary_size(prepared.tokenizer), len(prepared.splits.label_names)
    )
    token_ids, labels = _first_batch(config, prepared)
    return audit(
        classifier,
        token_ids,
        labels,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def prepare_data(config: Config, vocabulary_file: Path | None = None) -> Prepared:
    """Loads the splits, fits (or reloads) the tokenizer and tokenizes every split.

    Args:
        config: the run's config.
        vocabulary_file: reload this vocabulary instead of fitting one (resume).
    """
    splits = data.load_splits(config.data, seed=config.train.seed)
    for note in splits.notes:
        logger.info("%s", note)
    max_length = config.data.max_length
    if vocabulary_file is not None:
        tokenizer = tokenize.load_tokenizer(
            config.tokenizer, max_length, vocabulary_file
        )
    else:
        tokenizer = tokenize.fit_tokenizer(
            config.tokenizer, splits.train.texts, max_length
        )
    named = {"train": splits.train, "validation": splits.validation}
    if splits.test is not None:
        named["test"] = splits.test
    token_ids = {
        name: tokenize_texts(tokenizer, examples.texts)
        for name, examples in named.items()
    }
    return Prepared(splits, tokenizer, token_ids)


def _train_in_run(
    config: Config, run: Path, resume: bool, skip_audit: bool, started: float
) -> str:
    state = TrainingState(run / rundir.CHECKPOINTS_DIR)
    vocabulary_file = run / rundir.VOCABULARY_FILE if resume else None
    prepared = prepare_data(config, vocabulary_file)
    label_names = prepared.splits.label_names
    if resume and rundir.read_labels(run) != label_names:
        raise RunError(f"cannot resume {run}: its labels differ from the data's now")
    if not resume:
        save_config(config, run / rundir.CONFIG_FILE)
        rundir.write_labels(run, label_names)
        tokenize.save_vocabulary(prepared.tokenizer, run / rundir.VOCABULARY_FILE)

    strategy = _strategy(config.train.strategy)
    vocabulary_size = _vocabulary_size(prepared.tokenizer)
    train_examples = len(prepared.splits.train.labels)
    steps_per_epoch = math.ceil(train_examples / config.train.batch_size)
    with strategy.scope():
        classifier = build_classifier(config, vocabulary_size, len(label_names))
        classifier.compile(
            optimizer=_optimizer(config, steps_per_epoch),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=_jit_compile(config),
        )

    if not skip_audit and not resume:
        report = audit(
            classifier,
            *_first_batch(config, prepared),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        if not report.clean:
            raise AuditFailed(report)
        logger.info("trainability audit: clean")

    epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    # The shuffle order of epoch k depends on (seed, k) only, so a resumed run
    # sees the batches an uninterrupted run would have seen.
    train_dataset = make_dataset(
        prepared.token_ids["train"],
        prepared.splits.train.labels,
        config.train.batch_size,
        shuffle=True,
        seed=config.train.seed,
        epoch=epoch_variable,
    )
    validation_dataset = make_dataset(
        prepared.token_ids["validation"],
        prepared.splits.validation.labels,
        config.train.batch_size,
        shuffle=False,
        seed=config.train.seed,
    )
    initial_epoch = state.restore(classifier) if resume else 0
    callbacks = _callbacks(config, run, prepared, classifier, state, epoch_variable)
    if initial_epoch < config.train.epochs and not state.stopped_early:
        classifier.fit(
            train_dataset,
            validation_data=validation_dataset,
            epochs=config.train.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            shuffle=False,
            verbose=2 if not _is_terminal() else 1,
        )
    if state.diverged:
        raise TrainingDiverged(
            f"training stopped in epoch {state.diverged}: the loss became NaN or "
            "infinite; lower train.learning_rate or use train.mixed_precision=none"
        )
    if state.best_epoch < 0:
        raise TrainingDiverged("training finished no epoch; nothing to save")

    classifier.load_weights(state.best_weights_path)
    metrics = _final_metrics(config, prepared, classifier, state)
    metrics["wall_time_seconds"] = round(time.perf_counter() - started, 2)
    _save_artifacts(config, run, prepared, classifier, metrics)
    return _summary(run, metrics)


class TrainingState(keras.callbacks.Callback):
    """Epoch-end checkpoints for `--resume`, early stopping and the best weights.

    After every epoch it writes the model and optimizer weights, then a small
    JSON state (completed epochs, best validation loss, epochs without progress,
    history), each atomically; a run killed at any moment resumes from the last
    epoch whose state was written. The best epoch's weights are kept apart.

    Args:
        directory: the run's `checkpoints/` folder.
        patience: epochs without a lower validation loss before stopping; 0 never
            stops early.
    """

    def __init__(self, directory: Path, patience: int = 0):
        super().__init__()
        self.directory = Path(directory)
        self.patience = patience
        self.epoch = 0
        self.best_loss = math.inf
        self.best_epoch = -1
        self.wait = 0
        self.history: list[dict[str, float]] = []
        self.diverged = 0

    @property
    def best_weights_path(self) -> Path:
        return self.directory / BEST_WEIGHTS

    @property
    def stopped_early(self) -> bool:
        return bool(self.patience) and self.wait >= self.patience

    def restore(self, model: keras.Model) -> int:
        """Loads the last completed epoch's state into `model`; returns the epoch."""
        path = self.directory / STATE_FILE
        if not path.is_file():
            return 0
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            self.epoch = int(saved["epoch"])
            self.best_loss = float(saved["best_loss"])
            self.best_epoch = int(saved["best_epoch"])
            self.wait = int(saved["wait"])
            self.history = list(saved["history"])
            weights = self.directory / saved["weights"]
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"cannot resume: {path} is corrupt ({error})") from None
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(weights)
        for generator, state in zip(
            _seed_generators(model), saved.get("seed_states", []), strict=False
        ):
            generator.state.assign(np.asarray(state, dtype=generator.state.dtype))
        logger.info("resuming after epoch %d of the run", self.epoch)
        return self.epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        loss = logs.get("val_loss", logs.get("loss", math.nan))
        if not math.isfinite(logs.get("loss", math.nan)) or not math.isfinite(loss):
            self.diverged = epoch + 1
            self.model.stop_training = True
            return
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.wait = loss, epoch, 0
            with rundir.atomic_path(self.best_weights_path) as temporary:
                self.model.save_weights(temporary)
        else:
            self.wait += 1
        self.epoch = epoch + 1
        self.history.append(logs)
        self._write_state()
        if self.stopped_early:
            logger.info(
                "early stopping: no lower validation loss in %d epochs", self.wait
            )
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if logs and not math.isfinite(float(logs.get("loss", 0.0))):
            self.diverged = self.epoch + 1
            self.model.stop_training = True

    def _write_state(self) -> None:
        weights_name = f"epoch-{self.epoch}.weights.h5"
        with rundir.atomic_path(self.directory / weights_name) as temporary:
            self.model.save_weights(temporary)
        state = {
            "epoch": self.epoch,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "history": self.history,
            "weights": weights_name,
            # Dropout's random state is not part of the weights file.
            "seed_states": [
                keras.ops.convert_to_numpy(generator.state).tolist()
                for generator in _seed_generators(self.model)
            ],
        }
        rundir.atomic_write_text(self.directory / STATE_FILE, json.dumps(state))
        for old in self.directory.glob("epoch-*.weights.h5"):
            if old.name != weights_name:
                old.unlink(missing_ok=True)


def _seed_generators(model: keras.Model) -> list:
    """The random-state holders of a model's layers (dropout), in layer order."""
    return [
        generator
        for layer in model._flatten_layers()
        for generator in getattr(layer, "_seed_generators", [])
    ]


class _EpochCounter(keras.callbacks.Callback):
    """Tells the input pipeline which epoch starts, so its order depends on it."""

    def __init__(self, variable: tf.Variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


def _callbacks(
    config: Config,
    run: Path,
    prepared: Prepared,
    classifier: keras.Model,
    state: TrainingState,
    epoch_variable: tf.Variable,
) -> list[keras.callbacks.Callback]:
    state.patience = config.train.early_stopping_patience
    logs = run / rundir.LOGS_DIR
    profile = profile_steps(config)
    callbacks = [
        _EpochCounter(epoch_variable),
        keras.callbacks.TensorBoard(
            log_dir=str(logs),
            histogram_freq=1,
            write_graph=False,
            profile_batch=profile or 0,
        ),
        state,
    ]
    if config.model.pooling == "attention":
        callbacks.insert(2, _attention_summaries(config, logs, prepared, classifier))
    return callbacks


def _attention_summaries(
    config: Config, logs: Path, prepared: Prepared, classifier: keras.Model
) -> summaries.AttentionSummaries:
    explainer = attention_model(classifier)

    def attention_fn(token_ids: np.ndarray) -> np.ndarray:
        return np.asarray(explainer(token_ids, training=False)["attention"])

    count = config.train.summary_texts
    texts = [str(text) for text in prepared.splits.validation.texts[:count]]
    validation_ids = prepared.token_ids["validation"]
    return summaries.AttentionSummaries(
        log_dir=str(logs),
        texts=texts,
        token_ids=validation_ids[:count],
        tokens=tokenize.token_strings(prepared.tokenizer, texts),
        attention_fn=attention_fn,
        validation_token_ids=validation_ids[:SUMMARY_SAMPLE_ROWS],
        vocabulary=tokenize.vocabulary(prepared.tokenizer),
        log_every_steps=config.train.log_every_steps,
    )


def _final_metrics(
    config: Config, prepared: Prepared, classifier: keras.Model, state: TrainingState
) -> dict:
    best = state.history[state.best_epoch] if state.history else {}
    metrics = {
        "best_epoch": state.best_epoch + 1,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "train": {"loss": best.get("loss"), "accuracy": best.get("accuracy")},
    }
    splits = {"validation": prepared.splits.validation, "test": prepared.splits.test}
    for name, examples in splits.items():
        if examples is None:
            continue
        dataset = make_dataset(
            prepared.token_ids[name],
            examples.labels,
            config.train.batch_size,
            shuffle=False,
            seed=config.train.seed,
        )
        loss, accuracy = classifier.evaluate(dataset, verbose=0)
        metrics[name] = {
            "loss": float(loss),
            "accuracy": float(accuracy),
            "examples": int(len(examples.labels)),
        }
    metrics["history"] = state.history
    return metrics


def _save_artifacts(
    config: Config,
    run: Path,
    prepared: Prepared,
    classifier: keras.Model,
    metrics: dict,
) -> None:
    model = end_to_end_model(prepared.tokenizer, classifier)
    with rundir.atomic_path(run / rundir.MODEL_FILE) as temporary:
        model.save(temporary)
    rundir.atomic_write_text(run / rundir.METRICS_FILE, json.dumps(metrics, indent=2))

    logs = run / rundir.LOGS_DIR
    embeddings = classifier.get_layer("embedding")
    matrix = _token_embedding_matrix(embeddings)
    summaries.write_projector(logs, matrix, tokenize.vocabulary(prepared.tokenizer))
    final = {
        f"{split}_{name}": value
        for split in ("validation", "test")
        for name, value in metrics.get(split, {}).items()
        if name in ("loss", "accuracy")
    }
    summaries.write_hparams(logs, config.to_dict(), final)


def _token_embedding_matrix(layer: keras.layers.Layer) -> np.ndarray:
    if isinstance(layer, keras.layers.Embedding):
        return keras.ops.convert_to_numpy(layer.embeddings)
    return keras.ops.convert_to_numpy(layer.token_embedding.embeddings)


def _summary(run: Path, metrics: dict) -> str:
    validation = metrics["validation"]
    lines = [
        f"best epoch {metrics['best_epoch']} of {metrics['epochs_run']}"
        + (" (stopped early)" if metrics["stopped_early"] else ""),
        f"validation accuracy {validation['accuracy']:.4f}, "
        f"loss {validation['loss']:.4f}",
    ]
    if "test" in metrics:
        lines.append(
            f"test accuracy {metrics['test']['accuracy']:.4f}, "
            f"loss {metrics['test']['loss']:.4f}"
        )
    lines += [
        f"wall time {metrics['wall_time_seconds']:.1f} s",
        f"run directory {run}",
        f"TensorBoard: tensorboard --logdir {run / rundir.LOGS_DIR}",
    ]
    return "\n".join(lines)


def _open_run_dir(config: Config, run_dir: str | Path | None, resume: bool) -> Path:
    if resume:
        if run_dir is None:
            raise RunError("--resume needs the run directory to continue")
        run = rundir.require_run(run_dir, rundir.LABELS_FILE, rundir.VOCABULARY_FILE)
        if (run / rundir.MODEL_FILE).exists():
            raise RunError(f"{run} has already finished; nothing to resume")
        return run
    if run_dir is None:
        return rundir.create_run_dir(config.run.dir, config.run.name)
    run = Path(run_dir)
    if run.exists() and any(run.iterdir()):
        raise RunError(
            f"run directory {run} already exists and is not empty; "
            "choose another or add --resume"
        )
    run.mkdir(parents=True, exist_ok=True)
    return run


def _set_determinism(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    if not tf.config.list_physical_devices("GPU"):
        # Deterministic kernels cost little on the CPU; on GPUs some ops lack them.
        tf.config.experimental.enable_op_determinism()


def _strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    settings = config.train
    learning_rate = settings.learning_rate
    if settings.lr_schedule == "cosine":
        total = max(1, steps_per_epoch * settings.epochs)
        warmup = int(total * settings.warmup_fraction)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else settings.learning_rate,
            decay_steps=max(1, total - warmup),
            warmup_target=settings.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    return keras.optimizers.AdamW(
        learning_rate=learning_rate, weight_decay=settings.weight_decay
    )


def _jit_compile(config: Config) -> bool | str:
    return {"auto": "auto", "on": True, "off": False}[config.train.jit_compile]


def _first_batch(config: Config, prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    count = min(config.train.batch_size, len(prepared.splits.train.labels))
    return prepared.token_ids["train"][:count], prepared.splits.train.labels[:count]


def _vocabulary_size(tokenizer: keras.layers.Layer) -> int:
    return len(tokenize.vocabulary(tokenizer))


def _is_terminal() -> bool:
    import sys

    return sys.stdout.isatty()
