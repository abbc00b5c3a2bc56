"""nlp_attn: attention-pooling text classification on TensorFlow and Keras 3.

Importing the package registers our layers with Keras, so `.keras` files that use
them load with no `custom_objects`.
"""

import contextlib
import importlib.util
import os
import sys


@contextlib.contextmanager
def _quiet_native_stderr():
    """Hides the lines TensorFlow's C++ core prints while it is first imported.

    They (missing CUDA drivers, CPU features) are written straight to file
    descriptor 2 before any logging setting applies. Python exceptions are not
    affected: they are raised after the descriptor is restored. Users who set
    `TF_CPP_MIN_LOG_LEVEL` to 0 or 1 see everything.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("0", "1") or "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# The layers use only keras.ops and also run where TensorFlow is not installed
# (the JAX and PyTorch backends); the application itself needs TensorFlow.
if importlib.util.find_spec("tensorflow") is not None:
    with _quiet_native_stderr():
        import tensorflow  # noqa: F401  (first, so its start-up lines are hidden)

from nlp_attn import layers  # noqa: E402  (registers the layers with Keras)

__version__ = "0.1.0"
__all__ = ["layers", "__version__"]
