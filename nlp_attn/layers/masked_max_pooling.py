"""`MaskedMaxPooling`: the per-feature maximum over the unmasked tokens.

A comparison pooling for the model builder; Keras' `GlobalMaxPooling1D` ignores the
padding mask, so padded positions would win the maximum.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nlp_attn")
class MaskedMaxPooling(keras.layers.Layer):
    """Takes the maximum of each feature over the unmasked sequence positions.

    Input `(batch, sequence, features)` with an optional boolean padding mask
    `(batch, sequence)`; output `(batch, features)`. A row with no unmasked
    position gives zeros. The layer consumes the mask.

    Example:

    >>> x = keras.ops.ones((2, 5, 4))
    >>> tuple(MaskedMaxPooling()(x).shape)
    (2, 4)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.max(inputs, axis=1)
        mask = ops.expand_dims(ops.cast(mask, "bool"), -1)
        lowest = ops.convert_to_tensor(float("-inf"), dtype=inputs.dtype)
        maximum = ops.max(ops.where(mask, inputs, lowest), axis=1)
        any_token = ops.any(mask, axis=1)
        return ops.where(any_token, maximum, ops.zeros_like(maximum))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])
