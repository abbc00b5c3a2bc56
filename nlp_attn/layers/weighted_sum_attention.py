"""Attention pooling: one learned score vector per head weighs the tokens of a sequence.

Sits between the token embeddings (or encoder) and the classifier head in `model.py`.
"""

import keras
from keras import ops

# Score given to padded positions before the softmax. Scores are always float32, so
# this value needs no float16-safe variant; padded positions are also zeroed
# explicitly after the softmax, so their weight is exactly 0.0.
MASKED_SCORE = -1e9


@keras.saving.register_keras_serializable(package="nlp_attn")
class WeightedSumAttention(keras.layers.Layer):
    """Pools a sequence into one vector per head with learned attention weights.

    Each head owns a trainable score vector `w` of length `features`. Every token
    `x_t` gets the score `x_t · w`, the scores are turned into weights by a softmax
    over the unmasked positions of the sequence, and the output is the weighted sum
    of the tokens. The outputs of the heads are concatenated, head after head.

    Scores are not divided by `sqrt(features)`: unlike dot-product attention, the
    score is the product of the input with a single learned vector, whose norm acts
    as a learned temperature, and the Glorot initialization already keeps the
    initial scores at unit scale.

    Masking: the layer reads the padding mask that Keras attaches to its input (for
    example from `Embedding(mask_zero=True)`), or one passed as `mask=`. Padded
    positions get weight exactly 0.0; a row without any unmasked position gets
    all-zero weights and a zero output. The mask is consumed: the output carries
    none.

    Mixed precision: the scores and their softmax are computed in float32 whatever
    the dtype policy (the score vectors are read without autocasting), so large
    scores cannot overflow float16; the weighted sum and the outputs use the
    layer's compute dtype.

    Args:
        num_heads: Positive integer, the number of score vectors (heads).
        score_initializer: Initializer for the score vectors.
        score_regularizer: Optional regularizer for the score vectors.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of shape `(batch, sequence, features)`.
        mask: Optional boolean tensor of shape `(batch, sequence)`, True for real
            tokens and False for padding.
        return_attention: If True, also return the attention weights.

    Returns:
        The pooled tensor of shape `(batch, features * num_heads)`, and when
        `return_attention=True` a tuple of it and the attention weights of shape
        `(batch, num_heads, sequence)`.

    Example:

    >>> tokens = keras.Input(shape=(None,), dtype="int32")
    >>> embedded = keras.layers.Embedding(1000, 32, mask_zero=True)(tokens)
    >>> pooled, attention = WeightedSumAttention(num_heads=2)(
    ...     embedded, return_attention=True
    ... )
    >>> pooled.shape, attention.shape
    ((None, 64), (None, 2, None))
    """

    def __init__(
        self,
        num_heads=1,
        score_initializer="glorot_uniform",
        score_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        is_integer = isinstance(num_heads, int) and not isinstance(num_heads, bool)
        if not is_integer or num_heads < 1:
            raise ValueError(
                "`num_heads` must be a positive integer. "
                f"Received: num_heads={num_heads!r}"
            )
        self.num_heads = num_heads
        self.score_initializer = keras.initializers.get(score_initializer)
        self.score_regularizer = keras.regularizers.get(score_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                "WeightedSumAttention expects inputs of shape "
                f"(batch, sequence, features). Received: input_shape={input_shape}"
            )
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                "The last axis (features) of the input of WeightedSumAttention must "
                f"be known. Received: input_shape={input_shape}"
            )
        self.score = self.add_weight(
            name="score",
            shape=(features, self.num_heads),
            initializer=self.score_initializer,
            regularizer=self.score_regularizer,
            autocast=False,
        )
        self.input_spec = keras.InputSpec(ndim=3, axes={-1: features})

    def call(self, inputs, mask=None, return_attention=False):
        features = inputs.shape[-1]

        # Scores in float32: (batch, sequence, heads) -> (batch, heads, sequence).
        scores = ops.matmul(ops.cast(inputs, "float32"), self.score)
        scores = ops.transpose(scores, (0, 2, 1))

        if mask is None:
            attention = ops.softmax(scores, axis=-1)
        else:
            keep = ops.expand_dims(ops.cast(mask, "bool"), axis=1)
            scores = ops.where(keep, scores, MASKED_SCORE)
            attention = ops.where(keep, ops.softmax(scores, axis=-1), 0.0)
        attention = ops.cast(attention, self.compute_dtype)

        pooled = ops.einsum("bhs,bsf->bhf", attention, inputs)
        pooled = ops.reshape(pooled, (-1, self.num_heads * features))
        if return_attention:
            return pooled, attention
        return pooled

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] * self.num_heads)

    def compute_output_spec(self, inputs, mask=None, return_attention=False):
        batch, sequence, _ = inputs.shape
        pooled = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_attention:
            return pooled
        attention = keras.KerasTensor(
            (batch, self.num_heads, sequence), dtype=self.compute_dtype
        )
        return pooled, attention

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "score_initializer": keras.initializers.serialize(
                    self.score_initializer
                ),
                "score_regularizer": keras.regularizers.serialize(
                    self.score_regularizer
                ),
            }
        )
        return config
