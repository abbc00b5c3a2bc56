"""The classifier, built from the config: token ids in, logits out.

Sits between tokenize and train: embedding → [encoder] → pooling → our `Kernel` and
`LearnableShift` head. `end_to_end_model` puts the tokenizer in front for serving.
"""

from __future__ import annotations

import keras
import keras_hub

from nlp_attn.config import Config
from nlp_attn.layers import (
    Kernel,
    LearnableShift,
    MaskedMaxPooling,
    MaskedMeanPooling,
    WeightedSumAttention,
)

CLASSIFIER_NAME = "classifier"
TOKENIZER_NAME = "tokenizer"
POOLING_NAME = "pooling"
EMBEDDING_NAME = "embedding"


def build_classifier(
    config: Config, vocabulary_size: int, num_classes: int
) -> keras.Model:
    """Builds the classifier described by `config.model`.

    Args:
        config: the run's config; `model.*` and `data.max_length` are read.
        vocabulary_size: the number of token ids, padding (id 0) included.
        num_classes: the number of labels.

    Returns:
        A functional `keras.Model` named "classifier" mapping int token ids
        `(batch, sequence)`, 0 for padding, to float32 logits `(batch, num_classes)`.
        Its layers form a single chain, so `attention_model` can re-trace it.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    settings = config.model
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")

    # Embedding, with positions when an encoder needs word order.
    if settings.position_embedding or settings.encoder_layers:
        x = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size=vocabulary_size,
            sequence_length=config.data.max_length,
            embedding_dim=settings.embedding_dim,
            mask_zero=True,
            name=EMBEDDING_NAME,
        )(token_ids)
    else:
        x = keras.layers.Embedding(
            vocabulary_size,
            settings.embedding_dim,
            mask_zero=True,
            name=EMBEDDING_NAME,
        )(token_ids)

    for index in range(settings.encoder_layers):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=settings.encoder_intermediate_dim,
            num_heads=settings.encoder_heads,
            dropout=settings.dropout,
            name=f"encoder_{index}",
        )(x)

    x = _pooling(settings.pooling, settings.attention_heads)(x)
    x = keras.layers.Dropout(settings.dropout, name="pooled_dropout")(x)

    # The head: our Kernel and LearnableShift do what Dense would otherwise do.
    for index in range(settings.hidden_layers):
        x = Kernel(settings.hidden_units, name=f"hidden_{index}_kernel")(x)
        x = LearnableShift(per_feature=True, name=f"hidden_{index}_shift")(x)
        x = keras.layers.Activation(settings.activation, name=f"hidden_{index}_act")(x)
        x = keras.layers.Dropout(settings.dropout, name=f"hidden_{index}_dropout")(x)
    x = Kernel(num_classes, name="logits_kernel")(x)
    x = LearnableShift(per_feature=True, name="logits_shift")(x)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(token_ids, logits, name=CLASSIFIER_NAME)


def attention_model(classifier: keras.Model) -> keras.Model:
    """Wraps a classifier so it also returns its attention weights.

    Args:
        classifier: a model made by `build_classifier` (or loaded from a run) whose
            pooling is `attention`.

    Returns:
        A model sharing the classifier's layers and weights, mapping token ids to
        `{"logits": (batch, classes), "attention": (batch, heads, sequence)}`.
    """
    pooling = classifier.get_layer(POOLING_NAME)
    if not isinstance(pooling, WeightedSumAttention):
        raise ValueError(
            "attention weights exist only for model.pooling=attention; this model "
            f"pools with {type(pooling).__name__}"
        )
    return AttentionModel(classifier)


class AttentionModel(keras.Model):
    """Runs a classifier's layer chain and keeps the pooling layer's attention.

    A functional re-trace cannot do this: Keras refuses a second call of the
    pooling layer with more outputs than its first. The layers (and so the
    weights) are the classifier's own; Keras masks flow between them as in the
    classifier.

    Args:
        classifier: a model made by `build_classifier` with attention pooling.
    """

    def __init__(self, classifier: keras.Model, **kwargs):
        super().__init__(name="attention_model", **kwargs)
        self.classifier = classifier

    def call(self, token_ids, training=False):
        x, attention = token_ids, None
        for layer in self.classifier.layers[1:]:
            if layer.name == POOLING_NAME:
                x, attention = layer(x, return_attention=True, training=training)
            else:
                x = layer(x, training=training)
        return {"logits": x, "attention": keras.ops.cast(attention, "float32")}


def end_to_end_model(
    tokenizer: keras.layers.Layer, classifier: keras.Model
) -> keras.Model:
    """Puts the tokenizer in front of the classifier: raw strings in, logits out.

    Args:
        tokenizer: a layer from `nlp_attn.tokenize` mapping strings `(batch,)` to
            padded token ids `(batch, max_length)`.
        classifier: a model made by `build_classifier`.

    Returns:
        A `keras.Model` taking a batch of strings `(batch,)` to logits.
    """
    texts = keras.Input(shape=(), dtype="string", name="text")
    logits = classifier(tokenizer(texts))
    return keras.Model(texts, logits, name="end_to_end")


def classifier_of(model: keras.Model) -> keras.Model:
    """Returns the classifier inside an end-to-end model (or the model itself)."""
    if model.name == CLASSIFIER_NAME:
        return model
    return model.get_layer(CLASSIFIER_NAME)


def tokenizer_of(model: keras.Model) -> keras.layers.Layer:
    """Returns the tokenizer layer at the front of an end-to-end model."""
    for layer in model.layers:
        if layer.name != CLASSIFIER_NAME and not isinstance(
            layer, keras.layers.InputLayer
        ):
            return layer
    raise ValueError(f"model {model.name!r} has no tokenizer layer")


def _pooling(kind: str, heads: int) -> keras.layers.Layer:
    if kind == "attention":
        return WeightedSumAttention(num_heads=heads, name=POOLING_NAME)
    if kind == "mean":
        return MaskedMeanPooling(name=POOLING_NAME)
    if kind == "max":
        return MaskedMaxPooling(name=POOLING_NAME)
    raise ValueError(f"model.pooling must be attention, mean or max, got {kind!r}")
