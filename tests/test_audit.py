"""Tests of the trainability audit: each kind of finding, clean models, restoration.

Covers `nlp_attn.audit` on tiny hand-built models with known defects.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from nlp_attn.audit import KINDS, AuditReport, Finding, audit
from nlp_attn.layers import Kernel, LearnableShift, WeightedSumAttention

FEATURES = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
TOKENS = np.array([[3, 5, 7, 0], [2, 9, 0, 0], [4, 4, 4, 1], [6, 0, 0, 0]], "int32")
LABELS = np.array([0, 2, 1, 1], "int32")


def our_classifier(shift_per_feature=True, softmax=False):
    """Embedding(mask_zero) -> WeightedSumAttention -> Kernel -> LearnableShift."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(12, 6, mask_zero=True, name="embedding")(tokens)
    x = WeightedSumAttention(num_heads=2, name="attention")(x)
    x = Kernel(3, name="kernel")(x)
    x = LearnableShift(per_feature=shift_per_feature, name="shift")(x)
    if softmax:
        x = keras.layers.Softmax()(x)
    return keras.Model(tokens, x, name="ours")


def lambda_trap():
    """The origin story: a weight vector used from a Lambda layer."""
    weight = tf.Variable(tf.ones((3,)), name="lambda_weight")
    inputs = keras.Input(shape=(3,))
    scaled = keras.layers.Lambda(lambda x: x * weight, name="scale")(inputs)
    outputs = keras.layers.Dense(2, name="dense")(scaled)
    return keras.Model(inputs, outputs), weight


class RawVariableLayer(keras.layers.Layer):
    """Keeps a raw tf.Variable, which Keras does not track, on an attribute."""

    def build(self, input_shape):
        self.weight = tf.Variable(tf.ones(input_shape[-1:]), name="raw_weight")

    def call(self, inputs):
        return inputs * self.weight


def raw_attribute_trap():
    layer = RawVariableLayer(name="raw")
    model = keras.Sequential(
        [keras.Input(shape=(3,)), layer, keras.layers.Dense(2, name="dense")]
    )
    return model, layer.weight


class UnusedWeightLayer(keras.layers.Layer):
    """Creates a second weight that never touches the output."""

    def build(self, input_shape):
        self.used = self.add_weight(name="used", shape=(input_shape[-1],))
        self.unused = self.add_weight(name="unused", shape=(input_shape[-1],))

    def call(self, inputs):
        return inputs * self.used


def findings_of(report, kind):
    return [finding for finding in report.findings if finding.kind == kind]


@pytest.mark.parametrize(
    "make_trap, layer_name",
    [(lambda_trap, "scale"), (raw_attribute_trap, "raw")],
    ids=["lambda", "raw-attribute"],
)
def test_untracked_variable_is_reported_with_its_layer(make_trap, layer_name):
    model, weight = make_trap()

    report = audit(model, FEATURES)

    untracked = findings_of(report, "untracked")
    assert len(untracked) == 1
    assert untracked[0].layer == layer_name
    assert untracked[0].variable == weight.name
    assert not report.clean
    assert "untracked" in str(report) and layer_name in str(report)
    assert len(report.findings) == 1


def test_untracked_read_by_the_model_itself_names_the_model():
    class Scaled(keras.Model):
        def __init__(self):
            super().__init__(name="scaled")
            self.dense = keras.layers.Dense(2)
            self.factor = tf.Variable(2.0, name="factor")

        def call(self, inputs):
            return self.dense(inputs) * self.factor

    report = audit(Scaled(), FEATURES)

    (finding,) = findings_of(report, "untracked")
    assert finding.layer == "scaled"
    assert finding.variable.startswith("factor")


def test_frozen_layer_is_reported():
    inputs = keras.Input(shape=(3,))
    frozen = keras.layers.Dense(4, name="frozen")
    frozen.trainable = False
    outputs = keras.layers.Dense(2, name="head")(frozen(inputs))
    model = keras.Model(inputs, outputs)

    report = audit(model, FEATURES)

    frozen_findings = findings_of(report, "frozen")
    assert {finding.variable for finding in frozen_findings} == {
        "frozen/kernel",
        "frozen/bias",
    }
    assert {finding.layer for finding in frozen_findings} == {"frozen"}
    assert report.checked == 2
    assert len(report.findings) == 2


def test_batch_normalization_statistics_are_not_reported_as_frozen():
    model = keras.Sequential(
        [keras.Input(shape=(3,)), keras.layers.BatchNormalization(), Kernel(2)]
    )

    report = audit(model, FEATURES, training=True)

    assert report.clean, str(report)


@pytest.mark.parametrize("targets", [None, np.array([0, 1, 1, 0])])
def test_disconnected_weight_gets_no_gradient(targets):
    layer = UnusedWeightLayer(name="partly_used")
    model = keras.Sequential([keras.Input(shape=(3,)), layer, Kernel(2)])

    report = audit(model, FEATURES, targets)

    (finding,) = report.findings
    assert finding.kind == "no_gradient"
    assert finding.layer == "partly_used"
    assert finding.variable.endswith("partly_used/unused")


def test_disconnected_branch_of_a_subclassed_model_gets_no_gradient():
    class Branches(keras.Model):
        def __init__(self):
            super().__init__()
            self.used = keras.layers.Dense(2, name="used")
            self.ignored = keras.layers.Dense(2, name="ignored")

        def call(self, inputs):
            self.ignored(inputs)
            return self.used(inputs)

    report = audit(Branches(), FEATURES)

    assert {(f.kind, f.layer) for f in report.findings} == {("no_gradient", "ignored")}
    assert len(report.findings) == 2


def test_dead_units_give_zero_gradient():
    model = keras.Sequential(
        [
            keras.Input(shape=(3,)),
            keras.layers.Dense(
                4,
                activation="relu",
                kernel_initializer="zeros",
                bias_initializer=keras.initializers.Constant(-1.0),
                name="dead",
            ),
            keras.layers.Dense(2, name="head"),
        ]
    )

    report = audit(model, FEATURES)

    zero = {
        (f.layer, f.variable.rsplit("/", 1)[-1])
        for f in findings_of(report, "zero_gradient")
    }
    assert zero == {("dead", "kernel"), ("dead", "bias"), ("head", "kernel")}


def test_scalar_shift_before_softmax_crossentropy_gets_zero_gradient():
    model = our_classifier(shift_per_feature=False)

    report = audit(model, TOKENS, LABELS)

    assert [(f.kind, f.variable) for f in report.findings] == [
        ("zero_gradient", "shift/shift")
    ]


def test_weight_that_a_constraint_pins_is_unchanged():
    model = keras.Sequential(
        [
            keras.Input(shape=(3,)),
            Kernel(
                2,
                kernel_initializer="zeros",
                kernel_constraint=lambda weight: ops.zeros_like(weight),
                name="pinned",
            ),
            LearnableShift(per_feature=True),
        ]
    )

    report = audit(model, FEATURES)

    (finding,) = report.findings
    assert finding.kind == "unchanged"
    assert finding.layer == "pinned"


@pytest.mark.parametrize(
    "targets, compiled_loss, softmax",
    [
        (None, None, False),
        (None, None, True),
        (LABELS, None, False),
        (LABELS, "sparse_categorical_crossentropy", True),
        (keras.utils.to_categorical(LABELS, 3), "categorical_crossentropy", True),
    ],
    ids=["probe", "probe-softmax", "default-loss", "compiled", "compiled-one-hot"],
)
def test_model_of_our_layers_is_clean(targets, compiled_loss, softmax):
    model = our_classifier(softmax=softmax)
    if compiled_loss:
        model.compile(optimizer="adam", loss=compiled_loss)

    report = audit(model, TOKENS, targets)

    assert report.clean, str(report)
    assert report.checked == 4
    assert "clean" in str(report)
    assert "'ours'" in str(report)


def test_explicit_loss_is_used():
    model = our_classifier()

    report = audit(model, TOKENS, loss=lambda targets, outputs: tf.constant(0.0))

    assert {f.kind for f in report.findings} == {"no_gradient"}
    assert len(report.findings) == 4


@pytest.mark.parametrize("make_model", [our_classifier, lambda: lambda_trap()[0]])
def test_audit_leaves_the_model_unchanged(make_model):
    model = make_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    inputs = TOKENS if model.name == "ours" else FEATURES
    before = [variable.numpy() for variable in model.variables]
    outputs_before = ops.convert_to_numpy(model(inputs))

    audit(model, inputs, np.array([0, 1, 1, 0]))

    for old, variable in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(old, variable.numpy())
    np.testing.assert_array_equal(outputs_before, ops.convert_to_numpy(model(inputs)))
    assert "call" not in vars(model.layers[1])


def test_unbuilt_model_is_built_and_audited():
    model = keras.Sequential([keras.layers.Dense(2), LearnableShift()])

    report = audit(model, FEATURES)

    assert model.built
    assert report.clean and report.checked == 3


def test_report_format_lists_every_finding():
    report = AuditReport(
        model="m",
        checked=2,
        findings=[
            Finding("untracked", "scale", "w:0", "is not tracked"),
            Finding("no_gradient", "dense", "dense/bias", "gets no gradient"),
        ],
    )

    text = report.format()

    assert not report.clean
    assert text == str(report)
    assert "2 findings" in text
    assert "clean" not in text
    lines = text.splitlines()
    assert len(lines) == 3
    assert "[untracked]" in lines[1] and "'w:0'" in lines[1]
    assert "[no_gradient]" in lines[2] and "'dense/bias'" in lines[2]
    assert set(KINDS) >= {finding.kind for finding in report.findings}


def test_transformer_key_bias_is_expected_not_a_problem():
    import keras_hub

    token_ids = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(50, 8, mask_zero=True)(token_ids)
    x = keras_hub.layers.TransformerEncoder(intermediate_dim=16, num_heads=2)(x)
    x = WeightedSumAttention()(x)
    logits = Kernel(2)(x)
    model = keras.Model(token_ids, logits)
    inputs = np.array([[3, 4, 5, 0], [6, 7, 0, 0]], dtype="int32")

    report = audit(model, inputs, np.array([0, 1]))

    assert report.clean, report.format()
    assert [finding.variable.rsplit("/", 2)[-2:] for finding in report.expected] == [
        ["key", "bias"]
    ]
    assert "expected, and harmless" in report.format()
