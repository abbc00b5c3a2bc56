"""A learned bias: adds a trainable scalar, or one trainable value per feature.

Used by `model.py` after `Kernel`, which has no bias of its own.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nlp_attn")
class LearnableShift(keras.layers.Layer):
    """Adds a trainable shift to its input.

    By default the shift is one scalar (a weight of shape `()`) added to every
    element; with `per_feature=True` it is a vector of shape `(features,)` added
    along the last axis.

    Masking: a mask on the input passes through unchanged.

    Args:
        per_feature: If True, learn one shift per feature (last axis) instead of
            a single scalar.
        initializer: Initializer for the shift.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of shape `(batch, ..., features)`.

    Returns:
        A tensor of the same shape as `inputs`.

    Example:

    >>> tuple(LearnableShift(per_feature=True)(keras.ops.ones((2, 3))).shape)
    (2, 3)
    """

    def __init__(self, per_feature=False, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(per_feature, bool):
            raise ValueError(
                "`per_feature` must be True or False. "
                f"Received: per_feature={per_feature!r}"
            )
        self.per_feature = per_feature
        self.initializer = keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, input_shape):
        shape = ()
        if self.per_feature:
            if len(input_shape) < 1 or input_shape[-1] is None:
                raise ValueError(
                    "With per_feature=True the last axis of the input of "
                    "LearnableShift must be known. "
                    f"Received: input_shape={input_shape}"
                )
            shape = (input_shape[-1],)
        self.shift = self.add_weight(
            name="shift", shape=shape, initializer=self.initializer
        )

    def call(self, inputs):
        return ops.add(inputs, self.shift)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "per_feature": self.per_feature,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
