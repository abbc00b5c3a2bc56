"""Trainability audit: finds the variables of a model that training would never update.

Runs one batch through any Keras model; `nlp-attn audit` applies it to the model that
`model.py` builds from a config.
"""

import contextlib
import dataclasses

import keras
import numpy as np
import tensorflow as tf

# What a finding can report, in the order findings are listed:
#   untracked      a trainable tf.Variable read in the forward pass that is not one of
#                  the model's variables (the Lambda trap): fit() never updates it and
#                  saving drops it.
#   frozen         a model weight read in the forward pass as trainable, but excluded
#                  from training because its layer (or an enclosing one) is frozen.
#   no_gradient    a trainable weight the loss does not depend on (disconnected).
#   zero_gradient  a trainable weight whose gradient is zero everywhere on the batch.
#   unchanged      a trainable weight with a non-zero gradient that one optimizer
#                  step still leaves unchanged (a constraint undoes it, say).
KINDS = ("untracked", "frozen", "no_gradient", "zero_gradient", "unchanged")

# Learning rate of the throwaway Adam optimizer used for the one-step check. Adam's
# first step moves every weight with a non-zero gradient by about this much, which
# float32 resolves for weights of any ordinary magnitude.
AUDIT_LEARNING_RATE = 1e-3

# A gradient counts as zero when none of its entries exceeds this fraction of the
# largest gradient entry in the model. Exact zeros would miss gradients that vanish
# mathematically but not in float32, such as that of one shift added to all the
# logits before a softmax (rounding leaves about 1e-7 of the largest gradient).
# Real but small gradients sit above it: an untrained transformer's query kernel
# was measured at about 1e-5 of the largest, so 1e-5 itself was too coarse.
ZERO_GRADIENT_TOLERANCE = 1e-6

# Seed of the fixed random projection used as the loss when there are no targets.
PROBE_SEED = 0


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem found by `audit`.

    Attributes:
        kind: One of `KINDS`.
        layer: Name of the layer that owns the variable, or for an untracked variable
            the innermost layer that read it (the model's name when no layer did).
        variable: The variable's path in the model, or its TensorFlow name when the
            model does not track it.
        message: A sentence saying what is wrong and what it means for training.
    """

    kind: str
    layer: str
    variable: str
    message: str


@dataclasses.dataclass
class AuditReport:
    """The outcome of `audit`: what was checked and what was found.

    Attributes:
        model: Name of the audited model.
        checked: Number of trainable variables whose gradients were checked.
        findings: The problems found, empty when the model is clean.
        expected: Findings that follow from the model's mathematics and cost
            nothing (see `_is_inherent`); listed, but they do not make it unclean.
    """

    model: str
    checked: int
    findings: list[Finding] = dataclasses.field(default_factory=list)
    expected: list[Finding] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when the audit found nothing."""
        return not self.findings

    def format(self) -> str:
        """Returns the report as readable text, one finding a line."""
        heading = (
            f"Trainability audit of model '{self.model}': "
            f"{self.checked} trainable variables checked"
        )
        if self.clean:
            lines = [
                f"{heading}.",
                "clean: every variable read in the forward pass is tracked, "
                "receives a gradient and changes after one optimizer step.",
            ]
        else:
            count = len(self.findings)
            lines = [f"{heading}, {count} finding{'s' if count > 1 else ''}:"]
            lines += [_finding_line(finding) for finding in self.findings]
        if self.expected:
            lines.append("expected, and harmless:")
            lines += [_finding_line(finding) for finding in self.expected]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def audit(model, inputs, targets=None, loss=None, *, training=False) -> AuditReport:
    """Checks that every variable a model reads is tracked and trains on a batch.

    Runs one forward pass under a `tf.GradientTape`, takes the gradient of a loss
    with respect to the model's trainable variables, and applies one step of a
    throwaway Adam optimizer. Every variable of the model is restored afterwards,
    so the audit leaves the model as it found it.

    The loss is, in order of preference: `loss` when given; the model's compiled
    loss when there are targets; sparse categorical crossentropy from logits when
    there are targets; otherwise a fixed random projection of the outputs (unlike a
    plain sum, it still depends on every weight when the outputs are normalized,
    as softmax probabilities are). Regularization penalties are left out (except
    for a compiled multi-output loss, which Keras computes as a whole), since they
    give every regularized weight a gradient whether or not it affects the outputs.

    Args:
        model: A Keras model; built on `inputs` first if it is not built yet.
        inputs: One batch of model inputs (array, tensor, or a structure of them).
        targets: Optional targets for the batch.
        loss: Optional callable `loss(targets, outputs)` returning a loss tensor
            (averaged if not scalar), or the name of a Keras loss; `targets` may be
            None for a callable that does not need them.
        training: The `training` flag of the forward pass. False by default, so
            that dropout cannot zero a gradient by chance.

    Returns:
        An `AuditReport`; its `findings` list the problems, `clean` is True when
        there are none.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> audit(model, np.ones((4, 3), "float32")).clean
    True
    """
    if not model.built:
        model(inputs, training=False)
    variables = list(model.variables)
    saved_values = [variable.numpy() for variable in variables]
    owners = _variable_owners(model)
    layers = model._flatten_layers(include_self=False)

    try:
        with tf.GradientTape() as tape, _recording_reads(layers) as reads:
            outputs = model(inputs, training=training)
            loss_value = _loss(model, inputs, targets, outputs, loss)
        watched = tape.watched_variables()
        trainable = list(model.trainable_variables)
        gradients = tape.gradient(loss_value, trainable)
        zero = _zero_gradients(gradients)

        findings = _untracked_findings(model, watched, reads)
        findings += _frozen_findings(model, watched, owners)
        findings += _gradient_findings(trainable, gradients, zero, owners)
        findings += _step_findings(trainable, gradients, zero, owners)
    finally:
        for variable, value in zip(variables, saved_values, strict=True):
            variable.assign(value)

    return AuditReport(
        model=model.name,
        checked=len(trainable),
        findings=[finding for finding in findings if not _is_inherent(finding)],
        expected=[finding for finding in findings if _is_inherent(finding)],
    )


def _is_inherent(finding: Finding) -> bool:
    """True for a finding the mathematics of a standard layer makes harmless.

    The one case: the key projection's bias in dot-product attention (keras'
    `MultiHeadAttention`, inside keras-hub's `TransformerEncoder`). It adds the
    same amount to every key's score for a query, and the softmax over keys
    ignores such a shift, so its gradient is zero by construction.
    """
    return finding.kind == "zero_gradient" and finding.variable.endswith("/key/bias")


def _finding_line(finding: Finding) -> str:
    return (
        f"  [{finding.kind}] layer '{finding.layer}', variable "
        f"'{finding.variable}': {finding.message}"
    )


def _underlying(variable):
    """The tf.Variable behind a Keras variable (the variable itself if raw)."""
    value = getattr(variable, "_value", None)
    return variable if value is None else value


def _identities(variables) -> set[int]:
    return {id(v) for v in variables} | {id(_underlying(v)) for v in variables}


def _variable_owners(model) -> dict[int, str]:
    """Maps the id of each model variable to the name of the innermost layer that
    owns it. `_flatten_layers` lists every layer after the layers that contain it,
    so deeper owners overwrite shallower ones."""
    owners = {}
    for layer in model._flatten_layers(include_self=True):
        for variable in layer.weights:
            owners[id(variable)] = layer.name
    return owners


@contextlib.contextmanager
def _recording_reads(layers):
    """Records which trainable tf.Variables each layer's `call` reads.

    Each layer's `call` is wrapped, for the duration of the context, in an inner
    gradient tape; the outer tape still sees every read. Yields a list of
    `(layer, ids of the variables it read)`, filled in as the layers run.
    """
    reads = []

    def wrap(layer, call):
        def recorded_call(*args, **kwargs):
            with tf.GradientTape() as inner_tape:
                result = call(*args, **kwargs)
            reads.append((layer, _identities(inner_tape.watched_variables())))
            return result

        return recorded_call

    patched = []
    try:
        for layer in layers:
            had_own_call = "call" in vars(layer)
            original = layer.call
            object.__setattr__(layer, "call", wrap(layer, original))
            patched.append((layer, had_own_call, original))
        yield reads
    finally:
        for layer, had_own_call, original in patched:
            if had_own_call:
                object.__setattr__(layer, "call", original)
            else:
                object.__delattr__(layer, "call")


def _loss(model, inputs, targets, outputs, loss):
    if loss is not None:
        loss_function = keras.losses.get(loss) if isinstance(loss, str) else loss
        return tf.reduce_mean(loss_function(targets, _as_float32(outputs)))

    if targets is not None and getattr(model, "loss", None) is not None:
        if isinstance(model.loss, (list, tuple, dict)):
            return model.compute_loss(x=inputs, y=targets, y_pred=outputs)
        loss_function = keras.losses.get(model.loss)
        return tf.reduce_mean(loss_function(targets, _as_float32(outputs)))

    if targets is not None:
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(
                targets, _as_float32(outputs), from_logits=True
            )
        )

    generator = np.random.default_rng(PROBE_SEED)
    total = tf.constant(0.0)
    for output in tf.nest.flatten(outputs):
        if not output.dtype.is_floating:
            continue
        projection = generator.standard_normal(output.shape).astype("float32")
        total += tf.reduce_sum(tf.cast(output, "float32") * projection)
    return total


def _as_float32(outputs):
    return tf.nest.map_structure(lambda output: tf.cast(output, "float32"), outputs)


def _untracked_findings(model, watched, reads) -> list[Finding]:
    tracked = _identities(model.variables)
    findings = []
    for variable in watched:
        if id(variable) in tracked:
            continue
        readers = [
            (len(read_ids), layer.name)
            for layer, read_ids in reads
            if id(variable) in read_ids
        ]
        layer_name = min(readers)[1] if readers else model.name
        findings.append(
            Finding(
                kind="untracked",
                layer=layer_name,
                variable=variable.name,
                message=(
                    f"a trainable tf.Variable of shape {tuple(variable.shape)} is "
                    "read in the forward pass but is not one of the model's "
                    "variables, so training never updates it and saving drops it; "
                    "create it with add_weight() in the layer's build()"
                ),
            )
        )
    return findings


def _frozen_findings(model, watched, owners) -> list[Finding]:
    read = _identities(watched)
    trainable = {id(variable) for variable in model.trainable_variables}
    findings = []
    for variable in model.variables:
        if id(variable) in trainable or id(_underlying(variable)) not in read:
            continue
        layer_name = owners.get(id(variable), model.name)
        findings.append(
            Finding(
                kind="frozen",
                layer=layer_name,
                variable=variable.path,
                message=(
                    "the weight was created trainable and is read in the forward "
                    f"pass, but layer '{layer_name}' or a layer containing it has "
                    "trainable=False, so training never updates it"
                ),
            )
        )
    return findings


def _gradient_findings(trainable, gradients, zero, owners) -> list[Finding]:
    findings = []
    for variable, gradient, is_zero in zip(trainable, gradients, zero, strict=True):
        layer_name = owners.get(id(variable), "?")
        if gradient is None:
            findings.append(
                Finding(
                    kind="no_gradient",
                    layer=layer_name,
                    variable=variable.path,
                    message=(
                        "the loss does not depend on this weight (it is not "
                        "connected to the outputs, or only through a "
                        "non-differentiable operation), so it gets no gradient"
                    ),
                )
            )
        elif is_zero:
            findings.append(
                Finding(
                    kind="zero_gradient",
                    layer=layer_name,
                    variable=variable.path,
                    message=(
                        "the gradient of the loss is zero everywhere on this "
                        "batch (up to rounding): dead units, saturation, a zero "
                        "multiplier upstream, or a shift that the loss ignores, "
                        "as a softmax ignores one constant added to all logits"
                    ),
                )
            )
    return findings


def _step_findings(trainable, gradients, zero, owners) -> list[Finding]:
    """Applies one throwaway Adam step to the weights with a non-zero gradient and
    reports those that did not move. The caller restores every value."""
    pairs = [
        (gradient, variable)
        for variable, gradient, is_zero in zip(trainable, gradients, zero, strict=True)
        if gradient is not None and not is_zero
    ]
    if not pairs:
        return []
    before = [variable.numpy() for _, variable in pairs]
    keras.optimizers.Adam(learning_rate=AUDIT_LEARNING_RATE).apply_gradients(pairs)

    findings = []
    for (_, variable), value in zip(pairs, before, strict=True):
        if np.array_equal(variable.numpy(), value):
            findings.append(
                Finding(
                    kind="unchanged",
                    layer=owners.get(id(variable), "?"),
                    variable=variable.path,
                    message=(
                        "the weight has a non-zero gradient, yet one optimizer "
                        "step leaves it unchanged (a constraint may undo the "
                        "update)"
                    ),
                )
            )
    return findings


def _zero_gradients(gradients) -> list[bool]:
    """Tells for each gradient whether it is zero in the sense of
    `ZERO_GRADIENT_TOLERANCE`; None gradients count as not zero."""
    magnitudes = [None if g is None else _largest_magnitude(g) for g in gradients]
    largest = max((m for m in magnitudes if m is not None), default=0.0)
    return [
        m is not None and m <= ZERO_GRADIENT_TOLERANCE * largest for m in magnitudes
    ]


def _largest_magnitude(gradient) -> float:
    if isinstance(gradient, tf.IndexedSlices):
        gradient = gradient.values
    return float(tf.reduce_max(tf.abs(tf.cast(gradient, "float32"))))
