"""nlp_attn: attention-pooling text classification on TensorFlow and Keras 3.

Importing the package registers our layers with Keras, so `.keras` files that use
them load with no `custom_objects`.
"""

import os

# TensorFlow prints start-up lines (CPU features, missing CUDA) at import time;
# keep them off the terminal unless the user asked for them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from nlp_attn import layers  # noqa: E402  (registers the layers with Keras)

__version__ = "0.1.0"
__all__ = ["layers", "__version__"]
