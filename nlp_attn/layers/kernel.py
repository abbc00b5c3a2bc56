"""A bias-free learned projection: multiplies the last axis by a trainable matrix.

Used by `model.py` after the attention pooling; `LearnableShift` supplies the bias.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="nlp_attn")
class Kernel(keras.layers.Layer):
    """Multiplies the last axis of its input by a trainable `(input_dim, units)` matrix.

    This is a dense layer without bias and activation: pair it with
    `LearnableShift` for a bias. All axes but the last are kept.

    Masking: a mask on the input passes through unchanged.

    Args:
        units: Positive integer, the size of the output's last axis.
        kernel_initializer: Initializer for the matrix.
        kernel_regularizer: Optional regularizer for the matrix.
        kernel_constraint: Optional constraint for the matrix.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of shape `(batch, ..., input_dim)`.

    Returns:
        A tensor of shape `(batch, ..., units)`.

    Example:

    >>> tuple(Kernel(units=3)(keras.ops.ones((2, 5))).shape)
    (2, 3)
    """

    def __init__(
        self,
        units,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        kernel_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        is_integer = isinstance(units, int) and not isinstance(units, bool)
        if not is_integer or units < 1:
            raise ValueError(
                f"`units` must be a positive integer. Received: units={units!r}"
            )
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                "Kernel expects inputs of shape (batch, ..., input_dim). "
                f"Received: input_shape={input_shape}"
            )
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "The last axis of the input of Kernel must be known. "
                f"Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs):
        return ops.matmul(inputs, self.kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
            }
        )
        return config
