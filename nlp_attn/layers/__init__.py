"""The trainable layers of nlp_attn: attention pooling, a learned kernel and shift.

Importing this package registers them with Keras, so saved `.keras` files load
without `custom_objects`; `model.py` assembles them into the classifier.
"""

from nlp_attn.layers.kernel import Kernel
from nlp_attn.layers.learnable_shift import LearnableShift
from nlp_attn.layers.masked_max_pooling import MaskedMaxPooling
from nlp_attn.layers.masked_mean_pooling import MaskedMeanPooling
from nlp_attn.layers.weighted_sum_attention import WeightedSumAttention

__all__ = [
    "Kernel",
    "LearnableShift",
    "MaskedMaxPooling",
    "MaskedMeanPooling",
    "WeightedSumAttention",
]
