"""The data stage: from data specs to labelled splits and tf.data batches.

`sources` reads a spec, `split` fixes train / validation / test and the label
order, `pipeline` batches token ids; `commands` backs `nlp-attn data`.
"""

from nlp_attn.data.sources import Examples
from nlp_attn.data.split import Splits, load_examples, load_splits

__all__ = ["Examples", "Splits", "load_examples", "load_splits"]
