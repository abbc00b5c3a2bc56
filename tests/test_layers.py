"""Tests of the custom layers: shapes, masks, training, mixed precision, saving.

Covers `nlp_attn.layers` at the depth Keras tests its own layers, on tiny tensors.
"""

import re

import keras
import numpy as np
import pytest
from keras import ops

from nlp_attn.layers import (
    Kernel,
    LearnableShift,
    MaskedMaxPooling,
    MaskedMeanPooling,
    WeightedSumAttention,
)

# (layer class, constructor arguments, input shape, output shape, weight shapes)
LAYER_CASES = [
    pytest.param(
        WeightedSumAttention, {}, (2, 5, 4), (2, 4), {"score": (4, 1)}, id="attention"
    ),
    pytest.param(
        WeightedSumAttention,
        {"num_heads": 3},
        (2, 5, 4),
        (2, 12),
        {"score": (4, 3)},
        id="attention-3-heads",
    ),
    pytest.param(Kernel, {"units": 3}, (2, 4), (2, 3), {"kernel": (4, 3)}, id="kernel"),
    pytest.param(
        Kernel, {"units": 3}, (2, 5, 4), (2, 5, 3), {"kernel": (4, 3)}, id="kernel-3d"
    ),
    pytest.param(LearnableShift, {}, (2, 5, 4), (2, 5, 4), {"shift": ()}, id="shift"),
    pytest.param(
        LearnableShift,
        {"per_feature": True},
        (2, 4),
        (2, 4),
        {"shift": (4,)},
        id="shift-per-feature",
    ),
]


def random_inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def reference_pooling(inputs, score, mask=None):
    """NumPy attention pooling: returns pooled `(batch, features * heads)` and
    attention `(batch, heads, sequence)`."""
    scores = np.einsum("bsf,fh->bhs", inputs, score)
    if mask is None:
        mask = np.ones(inputs.shape[:2], bool)
    keep = mask[:, None, :]
    exponentials = np.where(keep, np.exp(scores - scores.max(-1, keepdims=True)), 0)
    totals = exponentials.sum(-1, keepdims=True)
    attention = np.divide(
        exponentials, totals, out=np.zeros_like(exponentials), where=totals > 0
    )
    pooled = np.einsum("bhs,bsf->bhf", attention, inputs)
    return pooled.reshape(len(inputs), -1), attention


def reference_output(layer, inputs):
    weights = layer.get_weights()[0]
    if isinstance(layer, WeightedSumAttention):
        return reference_pooling(inputs, weights)[0]
    if isinstance(layer, Kernel):
        return inputs @ weights
    return inputs + weights


def tiny_classifier(num_heads=2, seed=0):
    """Embedding(mask_zero) -> WeightedSumAttention -> Kernel -> LearnableShift."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input(shape=(None,), dtype="int32")
    embedded = keras.layers.Embedding(20, 6, mask_zero=True)(tokens)
    pooled = WeightedSumAttention(num_heads=num_heads, name="attention")(embedded)
    projected = Kernel(3, name="kernel")(pooled)
    logits = LearnableShift(per_feature=True, name="shift")(projected)
    return keras.Model(tokens, logits)


TOKENS = np.array([[3, 5, 7, 0, 0], [2, 9, 0, 0, 0], [4, 4, 4, 4, 1]], "int32")
LABELS = np.array([0, 2, 1], "int32")


@pytest.fixture
def dtype_policy():
    """Sets a global dtype policy for one test and restores float32 afterwards."""
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize(
    "layer_class, arguments, input_shape, output_shape, weight_shapes", LAYER_CASES
)
class TestEveryLayer:
    def test_build_creates_named_trainable_weights(
        self, layer_class, arguments, input_shape, output_shape, weight_shapes
    ):
        layer = layer_class(**arguments)
        assert not layer.weights

        layer.build(input_shape)

        assert layer.built
        assert {w.name: tuple(w.shape) for w in layer.weights} == weight_shapes
        assert len(layer.trainable_weights) == len(weight_shapes)
        assert not layer.non_trainable_weights
        assert all(w.dtype == "float32" for w in layer.weights)

    def test_symbolic_call(
        self, layer_class, arguments, input_shape, output_shape, weight_shapes
    ):
        layer = layer_class(**arguments)
        symbolic = keras.Input(shape=input_shape[1:], batch_size=input_shape[0])

        output = layer(symbolic)

        assert tuple(output.shape) == output_shape
        assert layer.compute_output_shape(input_shape) == output_shape
        unknown_batch = layer_class(**arguments)(keras.Input(shape=input_shape[1:]))
        assert tuple(unknown_batch.shape) == (None, *output_shape[1:])

    def test_eager_call_matches_reference(
        self, layer_class, arguments, input_shape, output_shape, weight_shapes
    ):
        layer = layer_class(**arguments, **_random_initializer(layer_class))
        inputs = random_inputs(input_shape)

        output = layer(inputs)

        assert tuple(output.shape) == output_shape
        assert keras.backend.standardize_dtype(output.dtype) == "float32"
        np.testing.assert_allclose(
            ops.convert_to_numpy(output), reference_output(layer, inputs), atol=1e-5
        )

    def test_training_step_changes_every_weight(
        self, layer_class, arguments, input_shape, output_shape, weight_shapes
    ):
        model = keras.Sequential(
            [keras.Input(shape=input_shape[1:]), layer_class(**arguments)]
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=lambda _, outputs: ops.sum(ops.square(outputs) + outputs),
        )
        before = [w.numpy() for w in model.trainable_weights]

        model.fit(
            random_inputs(input_shape), np.zeros(output_shape), epochs=1, verbose=0
        )

        after = [w.numpy() for w in model.trainable_weights]
        assert len(after) == len(weight_shapes)
        for old, new in zip(before, after, strict=True):
            assert not np.allclose(old, new)

    def test_config_round_trip(
        self, layer_class, arguments, input_shape, output_shape, weight_shapes
    ):
        layer = layer_class(**arguments, name="custom_name")

        config = layer.get_config()
        revived = layer_class.from_config(config)

        assert revived.get_config() == config
        assert revived.name == "custom_name"
        for key, value in arguments.items():
            assert config[key] == value
        serialized = keras.saving.serialize_keras_object(layer)
        assert serialized["registered_name"] == f"nlp_attn>{layer_class.__name__}"
        assert type(keras.saving.deserialize_keras_object(serialized)) is layer_class

    @pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
    def test_mixed_precision(
        self,
        layer_class,
        arguments,
        input_shape,
        output_shape,
        weight_shapes,
        policy,
        dtype_policy,
    ):
        reference = layer_class(**arguments, **_random_initializer(layer_class))
        inputs = random_inputs(input_shape)
        expected = ops.convert_to_numpy(reference(inputs))
        dtype_policy(policy)
        layer = layer_class(**arguments, **_random_initializer(layer_class))

        output = layer(inputs)
        symbolic = layer(keras.Input(shape=input_shape[1:]))

        compute_dtype = policy.removeprefix("mixed_")
        assert keras.backend.standardize_dtype(output.dtype) == compute_dtype
        assert symbolic.dtype == compute_dtype
        assert all(w.dtype == "float32" for w in layer.weights)
        np.testing.assert_allclose(
            ops.convert_to_numpy(ops.cast(output, "float32")),
            expected,
            rtol=0.05,
            atol=0.05,
        )


def _random_initializer(layer_class):
    """Non-zero initial weights (the shift starts at zero by default)."""
    initializer = keras.initializers.RandomNormal(seed=1)
    name = {
        WeightedSumAttention: "score_initializer",
        Kernel: "kernel_initializer",
        LearnableShift: "initializer",
    }[layer_class]
    return {name: initializer}


class TestWeightedSumAttentionMasking:
    def test_padding_gets_exactly_zero_weight(self):
        inputs = random_inputs((3, 5, 4))
        mask = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=bool)
        layer = WeightedSumAttention(num_heads=2)

        pooled, attention = layer(inputs, mask=mask, return_attention=True)

        attention = ops.convert_to_numpy(attention)
        assert np.all(attention[:, 0, :][~mask] == 0.0)
        assert np.all(attention[:, 1, :][~mask] == 0.0)
        np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-6)
        expected_pooled, expected_attention = reference_pooling(
            inputs, layer.get_weights()[0], mask
        )
        np.testing.assert_allclose(attention, expected_attention, atol=1e-6)
        np.testing.assert_allclose(
            ops.convert_to_numpy(pooled), expected_pooled, atol=1e-5
        )

    def test_padded_values_do_not_change_the_output(self):
        inputs = random_inputs((2, 4, 3))
        mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=bool)
        changed = inputs.copy()
        changed[~mask] = 1e4
        layer = WeightedSumAttention()

        np.testing.assert_array_equal(
            ops.convert_to_numpy(layer(inputs, mask=mask)),
            ops.convert_to_numpy(layer(changed, mask=mask)),
        )

    @pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
    def test_all_padding_row_gives_zeros(self, policy, dtype_policy):
        dtype_policy(policy)
        inputs = random_inputs((2, 3, 4))
        mask = np.array([[0, 0, 0], [1, 1, 0]], dtype=bool)
        layer = WeightedSumAttention(num_heads=2)

        pooled, attention = layer(inputs, mask=mask, return_attention=True)

        pooled = ops.convert_to_numpy(ops.cast(pooled, "float32"))
        attention = ops.convert_to_numpy(ops.cast(attention, "float32"))
        assert np.all(np.isfinite(pooled))
        np.testing.assert_array_equal(pooled[0], 0.0)
        np.testing.assert_array_equal(attention[0], 0.0)
        assert np.all(pooled[1] != 0.0)

    def test_large_scores_stay_finite_in_float16(self, dtype_policy):
        dtype_policy("mixed_float16")
        inputs = np.full((1, 3, 8), 200.0, "float32")
        inputs[0, 2] = -200.0
        layer = WeightedSumAttention(score_initializer=keras.initializers.Constant(50))

        pooled, attention = layer(inputs, return_attention=True)

        attention = ops.convert_to_numpy(ops.cast(attention, "float32"))
        assert np.all(np.isfinite(ops.convert_to_numpy(ops.cast(pooled, "float32"))))
        np.testing.assert_allclose(attention[0, 0], [0.5, 0.5, 0.0])

    def test_reads_the_keras_mask_and_consumes_it(self):
        model = tiny_classifier()
        embedding = model.layers[1]
        attention_layer = model.get_layer("attention")
        embedded = embedding(TOKENS)

        from_keras_mask = attention_layer(embedded)
        explicit = attention_layer(embedded, mask=TOKENS != 0)
        unmasked = attention_layer(ops.add(embedded, 0.0))

        np.testing.assert_allclose(
            ops.convert_to_numpy(from_keras_mask), ops.convert_to_numpy(explicit)
        )
        assert not np.allclose(
            ops.convert_to_numpy(from_keras_mask), ops.convert_to_numpy(unmasked)
        )
        assert attention_layer.compute_mask(embedded, TOKENS != 0) is None
        assert getattr(from_keras_mask, "_keras_mask", None) is None

    @pytest.mark.parametrize(
        "make_layer", [lambda: Kernel(2), LearnableShift], ids=["kernel", "shift"]
    )
    def test_kernel_and_shift_pass_the_mask_through(self, make_layer):
        layer = make_layer()
        mask = ops.convert_to_tensor(TOKENS != 0)
        output_mask = layer.compute_mask(random_inputs((3, 5, 4)), mask)

        np.testing.assert_array_equal(ops.convert_to_numpy(output_mask), TOKENS != 0)
        assert layer.supports_masking


class TestWeightedSumAttentionHeads:
    def test_return_attention_shapes(self):
        symbolic = keras.Input(shape=(7, 4))
        layer = WeightedSumAttention(num_heads=3)

        pooled, attention = layer(symbolic, return_attention=True)
        eager_pooled, eager_attention = layer(
            random_inputs((2, 7, 4)), return_attention=True
        )

        assert tuple(pooled.shape) == (None, 12)
        assert tuple(attention.shape) == (None, 3, 7)
        assert tuple(eager_pooled.shape) == (2, 12)
        assert tuple(eager_attention.shape) == (2, 3, 7)

    def test_heads_are_concatenated_in_order(self):
        inputs = random_inputs((2, 5, 4))
        layer = WeightedSumAttention(num_heads=3)

        pooled = ops.convert_to_numpy(layer(inputs))

        score = layer.get_weights()[0]
        for head in range(3):
            single = WeightedSumAttention()
            single.build(inputs.shape)
            single.set_weights([score[:, head : head + 1]])
            np.testing.assert_allclose(
                pooled[:, head * 4 : (head + 1) * 4],
                ops.convert_to_numpy(single(inputs)),
                atol=1e-6,
            )

    def test_heads_differ(self):
        _, attention = WeightedSumAttention(num_heads=2)(
            random_inputs((2, 5, 4)), return_attention=True
        )

        attention = ops.convert_to_numpy(attention)
        assert not np.allclose(attention[:, 0], attention[:, 1])


class TestTinyClassifier:
    def test_one_training_step_changes_every_weight(self):
        model = tiny_classifier()
        model.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        before = {w.path: w.numpy() for w in model.trainable_weights}

        model.fit(TOKENS, LABELS, epochs=1, batch_size=len(TOKENS), verbose=0)

        after = {w.path: w.numpy() for w in model.trainable_weights}
        assert len(after) == 4
        assert {path.split("/")[0] for path in after} >= {
            "attention",
            "kernel",
            "shift",
        }
        for path, value in before.items():
            assert not np.allclose(value, after[path]), f"{path} did not change"

    def test_keras_file_round_trip_without_custom_objects(self, tmp_path):
        model = tiny_classifier(num_heads=3)
        path = tmp_path / "tiny.keras"

        model.save(path)
        loaded = keras.saving.load_model(path)

        assert [type(layer) for layer in loaded.layers] == [
            type(layer) for layer in model.layers
        ]
        assert loaded.get_layer("attention").num_heads == 3
        np.testing.assert_array_equal(
            ops.convert_to_numpy(loaded(TOKENS)), ops.convert_to_numpy(model(TOKENS))
        )

    def test_config_with_regularizers_round_trips(self):
        layers = [
            WeightedSumAttention(
                num_heads=2,
                score_initializer="he_normal",
                score_regularizer=keras.regularizers.L2(0.01),
            ),
            Kernel(
                4,
                kernel_initializer="orthogonal",
                kernel_regularizer="l1",
                kernel_constraint="non_neg",
            ),
            LearnableShift(per_feature=True, initializer="ones"),
        ]

        for layer in layers:
            revived = type(layer).from_config(layer.get_config())
            assert revived.get_config() == layer.get_config()

        revived_attention = WeightedSumAttention.from_config(layers[0].get_config())
        assert isinstance(revived_attention.score_regularizer, keras.regularizers.L2)
        assert revived_attention.score_regularizer.l2 == pytest.approx(0.01)


@pytest.mark.parametrize(
    "make_layer, argument, value",
    [
        (lambda: WeightedSumAttention(num_heads=0), "num_heads", "0"),
        (lambda: WeightedSumAttention(num_heads=-2), "num_heads", "-2"),
        (lambda: WeightedSumAttention(num_heads=1.5), "num_heads", "1.5"),
        (lambda: WeightedSumAttention(num_heads=True), "num_heads", "True"),
        (lambda: Kernel(units=0), "units", "0"),
        (lambda: Kernel(units=-1), "units", "-1"),
        (lambda: Kernel(units="3"), "units", "'3'"),
        (lambda: LearnableShift(per_feature="yes"), "per_feature", "'yes'"),
    ],
)
def test_bad_arguments_raise(make_layer, argument, value):
    with pytest.raises(ValueError, match=re.escape(f"{argument}={value}")):
        make_layer()


@pytest.mark.parametrize(
    "make_layer, input_shape",
    [
        (WeightedSumAttention, (2, 4)),
        (WeightedSumAttention, (2, 3, 4, 5)),
        (WeightedSumAttention, (2, 3, None)),
        (lambda: Kernel(2), (4,)),
        (lambda: Kernel(2), (2, None)),
        (lambda: LearnableShift(per_feature=True), (2, None)),
    ],
)
def test_bad_input_shape_raises_at_build(make_layer, input_shape):
    with pytest.raises(ValueError, match=re.escape(f"input_shape={input_shape}")):
        make_layer().build(input_shape)


@pytest.mark.parametrize("layer_class", [MaskedMeanPooling, MaskedMaxPooling])
def test_comparison_poolings_ignore_padding_and_empty_rows(layer_class):
    values = np.array(
        [
            [[1.0, -2.0], [3.0, 4.0], [100.0, 100.0]],
            [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]],
        ],
        dtype="float32",
    )
    mask = np.array([[True, True, False], [False, False, False]])

    output = keras.ops.convert_to_numpy(layer_class()(values, mask=mask))

    expected_first = [2.0, 1.0] if layer_class is MaskedMeanPooling else [3.0, 4.0]
    np.testing.assert_allclose(output[0], expected_first)
    np.testing.assert_array_equal(output[1], [0.0, 0.0])
    restored = layer_class.from_config(layer_class().get_config())
    assert isinstance(restored, layer_class)
