"""`MaskedMeanPooling`: the per-feature mean over the unmasked tokens.

A comparison pooling for the model builder; unlike Keras' `GlobalAveragePooling1D`
it gives zeros, not NaN, for a text with no tokens at all.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nlp_attn")
class MaskedMeanPooling(keras.layers.Layer):
    """Averages each feature over the unmasked sequence positions.

    Input `(batch, sequence, features)` with an optional boolean padding mask
    `(batch, sequence)`; output `(batch, features)`. A row with no unmasked
    position gives zeros. The layer consumes the mask.

    Example:

    >>> x = keras.ops.ones((2, 5, 4))
    >>> tuple(MaskedMeanPooling()(x).shape)
    (2, 4)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        total = ops.sum(inputs * weights, axis=1)
        count = ops.sum(weights, axis=1)
        return total / ops.maximum(count, ops.ones_like(count))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])
