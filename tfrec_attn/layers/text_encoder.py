"""The text encoder: raw item text -> one vector, BERT tokenization inside the graph.

A functional Keras model (string [N] -> float [N, hidden]):

    text --BertTokenization (tensorflow_text, vocab.txt as a SavedModel asset)-->
      input_ids, attention_mask [N, T] (T = longest text in the batch, <= max_tokens)
    --transformers.TFBertModel--> last hidden states --masked mean (or [CLS])--> [N, hidden]
    (--L2 normalize, as sentence-transformers' all-MiniLM-L6-v2 does)

Tokenization matches ``transformers.BertTokenizer`` (lower-casing and accent stripping
for uncased models, ``[CLS] ... [SEP]``, truncation to ``max_tokens``).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tfrec_attn.layers.attention import register

POOLING_TYPES = ("mean", "cls")


def _special_ids(vocab_path: str) -> dict:
    ids = {}
    with open(vocab_path, encoding="utf-8") as f:
        for index, token in enumerate(f):
            token = token.rstrip("\n")
            if token in ("[CLS]", "[SEP]", "[PAD]"):
                ids[token] = index
    missing = {"[CLS]", "[SEP]", "[PAD]"} - set(ids)
    if missing:
        from tfrec_attn.text.pretrained import PretrainedModelError

        raise PretrainedModelError(f"{vocab_path}: no {', '.join(sorted(missing))} token (not a BERT vocabulary)")
    return ids


def lower_case_of(model_dir: str) -> bool:
    """Whether the model expects lower-cased, accent-stripped input (``do_lower_case``)."""
    path = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return bool(json.load(f).get("do_lower_case", True))
    name = os.path.basename(os.path.normpath(model_dir)).lower()
    return not ("cased" in name and "uncased" not in name)


@register
class BertTokenization(tf.keras.layers.Layer):
    """Strings -> BERT ``input_ids`` / ``attention_mask``, padded to the longest text.

    Args:
        vocab_path: str. WordPiece ``vocab.txt`` (becomes a SavedModel asset on export).
        lower_case: bool. Lower-case + strip accents (uncased models).
        max_tokens: int. Longest output including ``[CLS]`` and ``[SEP]``.

    Call: ``texts`` string [N] -> dict of int32 [N, T]: ``input_ids``, ``attention_mask``.
    """

    def __init__(self, vocab_path: str, lower_case: bool = True, max_tokens: int = 64, **kwargs):
        super().__init__(trainable=False, **kwargs)
        import tensorflow_text as tf_text

        if max_tokens < 3:
            raise ValueError(f"max_tokens must be >= 3 ([CLS] + a token + [SEP]), got {max_tokens}")
        self.vocab_path = vocab_path
        self.lower_case = lower_case
        self.max_tokens = max_tokens
        special = _special_ids(vocab_path)
        self.cls_id, self.sep_id, self.pad_id = special["[CLS]"], special["[SEP]"], special["[PAD]"]
        self.tokenizer = tf_text.BertTokenizer(vocab_path, lower_case=lower_case, token_out_type=tf.int32,
                                               unknown_token="[UNK]")

    def call(self, texts):
        texts = tf.reshape(texts, [-1])
        tokens = self.tokenizer.tokenize(texts).merge_dims(-2, -1)[:, : self.max_tokens - 2]
        n = tf.shape(texts)[0]
        cls = tf.fill([n, 1], self.cls_id)
        sep = tf.fill([n, 1], self.sep_id)
        ids = tf.concat([cls, tokens, sep], axis=1)
        mask = tf.ones_like(ids)
        return {"input_ids": ids.to_tensor(self.pad_id), "attention_mask": mask.to_tensor(0)}

    def get_config(self):
        return {**super().get_config(), "vocab_path": self.vocab_path, "lower_case": self.lower_case,
                "max_tokens": self.max_tokens}


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
        from tfrec_attn.text.pretrained import load_bert

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
        states = bert(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
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
