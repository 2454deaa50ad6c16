"""The text encoder: raw item text -> one vector, BERT tokenization inside the graph.

A functional Keras model (string [N] -> float [N, hidden]):

    text --BertTokenization (tensorflow_text, vocab.txt as a SavedModel asset)-->
      input_ids, attention_mask, token_type_ids [N, T] (T = longest text in the batch, <= max_tokens)
    --transformers.TFBertModel--> last hidden states --masked mean (or [CLS])--> [N, hidden]
    (--L2 normalize, as sentence-transformers' all-MiniLM-L6-v2 does)

Tokenization (:mod:`tfrec_attn.text.tokenization`) matches ``transformers.BertTokenizer``;
the weights load through :func:`tfrec_attn.text.pretrained.load_bert`.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tfrec_attn.features.serializable import register
from tfrec_attn.text.defaults import POOLING_TYPES
from tfrec_attn.text.pretrained import load_bert
from tfrec_attn.text.tokenization import BertTokenization, lower_case_of


@register
class TokenPooling(tf.keras.layers.Layer):
    """Token states [N, T, h] + mask [N, T] -> [N, h]: masked mean or [CLS]; optionally
    L2-normalized."""

    def __init__(self, pooling: str = "mean", normalize: bool = True, **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLING_TYPES:
            raise ValueError(f"pooling must be one of {', '.join(POOLING_TYPES)}, got {pooling!r}")
        self.pooling = pooling
        self.normalize = normalize

    def call(self, states, mask):
        states = tf.cast(states, tf.float32)
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            weights = tf.cast(mask, tf.float32)[..., tf.newaxis]
            pooled = tf.reduce_sum(states * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1e-9)
        return tf.math.l2_normalize(pooled, axis=-1) if self.normalize else pooled

    def get_config(self):
        return {**super().get_config(), "pooling": self.pooling, "normalize": self.normalize}


@register
class TextEncoder(tf.keras.Model):
    """Raw text -> a fixed vector from a pretrained BERT (in-graph tokenization).

    Args:
        model_dir: str. Directory with ``config.json``, ``vocab.txt`` and weights (see
            :func:`tfrec_attn.text.resolve_model_dir` for names -> directories).
        max_tokens: int. Tokens per text including ``[CLS]``/``[SEP]``.
        pooling: str. ``mean`` (sentence-transformers) or ``cls``.
        normalize: bool. L2-normalize the pooled vector.
        trainable_layers: int. Fine-tune the last N transformer layers (0 = frozen).
        pretrained: bool. Load the directory's weights (False: random, e.g. before a
            checkpoint restore).

    Inputs: string [N]. Outputs: float32 [N, hidden_size].

    Example:
        >>> encoder = TextEncoder(resolve_model_dir(DEFAULT_ENCODER))
        >>> encoder(tf.constant(["Toy Story (1995). Genres: Animation"]))  # [1, 384]
    """

    def __init__(self, model_dir: str, max_tokens: int = 64, pooling: str = "mean", normalize: bool = True,
                 trainable_layers: int = 0, pretrained: bool = True, **kwargs):
        # === Layers ===
        tokenization = BertTokenization(os.path.join(model_dir, "vocab.txt"), lower_case_of(model_dir),
                                        max_tokens, name="tokenization")
        bert = load_bert(model_dir, pretrained=pretrained)
        num_layers = bert.config.num_hidden_layers
        if not 0 <= trainable_layers <= num_layers:
            raise ValueError(f"trainable_layers must be in [0, {num_layers}], got {trainable_layers}")
        bert.trainable = trainable_layers > 0
        if trainable_layers:
            main = bert.bert
            main.embeddings.trainable = False
            main.pooler.trainable = False
            for i, layer in enumerate(main.encoder.layer):
                layer.trainable = i >= num_layers - trainable_layers
        pool = TokenPooling(pooling, normalize, name="pooling")

        # === Functional model ===
        texts = tf.keras.Input(shape=(), dtype=tf.string, name="texts")
        tokens = tokenization(texts)
        states = bert(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                      token_type_ids=tokens["token_type_ids"]).last_hidden_state
        super().__init__(inputs=texts, outputs=pool(states, tokens["attention_mask"]), **kwargs)

        # === Config ===
        self.model_dir = model_dir
        self.max_tokens = max_tokens
        self.pooling = pooling
        self.normalize = normalize
        self.trainable_layers = trainable_layers
        self.hidden_size = bert.config.hidden_size
        self.bert = bert
        self.tokenization = tokenization

    def get_config(self):
        return {"name": self.name, "model_dir": self.model_dir, "max_tokens": self.max_tokens,
                "pooling": self.pooling, "normalize": self.normalize,
                "trainable_layers": self.trainable_layers}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def encode_texts(encoder: TextEncoder, texts, batch_size: int = 128, progress: str | None = None):
    """Numpy [len(texts), hidden] of ``encoder`` over a list of strings, in batches sorted
    by length (little padding); ``progress``: a tqdm description to show, or None."""
    import numpy as np

    texts = list(texts)
    out = np.zeros((len(texts), encoder.hidden_size), np.float32)
    if not texts:
        return out
    order = np.argsort([len(t) for t in texts], kind="stable")
    fn = tf.function(lambda t: encoder(t, training=False), reduce_retracing=True,
                     input_signature=[tf.TensorSpec([None], tf.string)])
    batches = range(0, len(texts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=progress, unit="batch", leave=False)
    for start in batches:
        rows = order[start:start + batch_size]
        out[rows] = fn(tf.constant([texts[i] for i in rows])).numpy()
    return out
