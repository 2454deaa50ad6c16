"""Item towers: map model item indices to embeddings.

Every item tower exposes the same calls, so the user tower, the losses and the
retrieval index never need to know what is inside:

* ``tower(indices)`` -> embeddings ``[..., embedding_dim]`` (history items),
* ``tower.candidate_embeddings(indices, training=None)`` -> the same, as softmax candidates,
* ``tower.all_embeddings(training=None)`` -> ``[num_indices, embedding_dim]`` (the candidate table),
* ``tower.embed_text_features(indices, features)`` -> embeddings of items given their
  text-encoder features ``[..., text_dim]``: how an item the model has never seen
  (index 1, OOV) gets an embedding from its text alone. The id tower ignores the text
  (every unknown item is the OOV embedding).

Types (``model.item_tower.type``):

* ``id``: collaborative, one learned embedding per item;
* ``text``: content only, the item is a projection of its text encoding;
* ``ensemble``: no layer of this module: an id model and a text model trained apart, their
  scores added (:mod:`tfrec_attn.models.ensemble`);
* ``hybrid``: id embedding fused with the text projection (``fusion``: ``sum``,
  ``gated`` sum, ``concat_mlp``, or ``subspace``: AlphaFuse, SIGIR 2025 — the first
  ``subspace_dim`` coordinates are the item text's whitened principal components, frozen (one
  learned gain scales them all), and the id embedding is learned in the other coordinates,
  the text subspace's null space, so an unknown item is placed by its text and known ids
  cannot overwrite it). Items never seen in training read the OOV id row, and
  ``id_dropout`` replaces the id of training items by OOV at that rate (in histories; with
  ``id_dropout_candidates`` among the softmax candidates too), so the OOV row learns to
  stand for "known by its text only" and the tower learns to place items from their text
  alone (DropoutNet). Measured trade-off: docs/benchmarks.md.

With ``whitening="zca"`` a text tower whitens the encodings before projecting them (the
mean and the ZCA matrix are fitted once on the catalogue's features and stored in the
model, so an export whitens a new item's encoding the same way); with ``projection="mlp"``
that is WhitenRec's whitened text + MLP adaptor. An id table (the id tower's, the hybrid's)
may start from the PCA of the items' text encodings instead of random values
(``model.item_tower.id_init``, set by the retrieval recipe: :attr:`id_table`).

The text towers read the catalogue's text features from a non-trainable table filled
once from the frozen encoder (:mod:`tfrec_attn.text.features`), the fast path: the
encoder runs once per item, not once per step. With ``trainable_layers > 0`` the tower
instead holds the encoder and the catalogue's texts and encodes the distinct items of
each batch, fine-tuning the encoder's last layers (its own optimizer and learning rate:
:meth:`~tfrec_attn.models.base.RecommenderModel.optimizer_groups`).
"""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register
from tfrec_attn.features.vocab import FIRST_ITEM_INDEX

ITEM_TOWER_TYPES = ("id", "text", "hybrid", "ensemble")
# The towers that embed an item from its text; ``ensemble`` is two models, an id one and a
# ``text_part`` one (tfrec_attn.models.ensemble), not a layer of this module.
TEXT_TOWER_TYPES = ("text", "hybrid", "ensemble")
TEXT_LAYER_TYPES = ("text", "hybrid")  # TextItemTower's kinds (and an ensemble's text part)
FUSION_TYPES = ("sum", "gated", "concat_mlp", "subspace")
PROJECTION_TYPES = ("linear", "mlp")
WHITENING_TYPES = ("none", "zca")  # text encodings as they are, or ZCA-whitened (WhitenRec)
ID_INITS = ("random", "pca")  # id rows: random, or the principal components of the items' text


def reads_text(tower_type: str) -> bool:
    """Whether an item tower of ``tower_type`` reads item text (and so can embed an item it
    never saw in training): the one place this is decided."""
    return tower_type in TEXT_TOWER_TYPES


EMBEDDING_INIT_STDDEV = 0.02


def _embedding_init():
    return tf.keras.initializers.TruncatedNormal(stddev=EMBEDDING_INIT_STDDEV)


@register
class IdItemTower(tf.keras.layers.Layer):
    """An embedding per item index (0 = padding, 1 = out-of-vocabulary).

    Args:
        num_indices: int. Vocabulary size including padding and OOV.
        embedding_dim: int.
    """

    text_dim = 0
    kind = "id"
    reads_text = False

    def __init__(self, num_indices: int, embedding_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.num_indices = num_indices
        self.embedding_dim = embedding_dim
        self.embedding = tf.keras.layers.Embedding(
            num_indices, embedding_dim, name="item_id_embedding", embeddings_initializer=_embedding_init())

    def call(self, indices):
        return self.embedding(indices)

    def embed_text_features(self, indices, features):
        del features  # an id tower knows items by id only
        return self.embedding(indices)

    def candidate_embeddings(self, indices, training=None):
        return self.embedding(indices)

    @property
    def id_table(self):
        """The id embedding variable [num_indices, embedding_dim]."""
        if not self.embedding.built:
            self.embedding.build((None,))
        return self.embedding.embeddings

    def all_embeddings(self, training=None):
        del training  # nothing random in an id tower
        if not self.embedding.built:
            self.embedding.build((None,))
        return tf.convert_to_tensor(self.embedding.embeddings)

    def get_config(self):
        return {**super().get_config(), "num_indices": self.num_indices, "embedding_dim": self.embedding_dim}


@register
class TextItemTower(tf.keras.layers.Layer):
    """Items from their text encoding (``kind="text"``), fused with an id embedding
    (``kind="hybrid"``).

    Args:
        num_indices: int. Vocabulary size including padding and OOV.
        embedding_dim: int.
        text_dim: int. Width of the text encoder's features (384 for MiniLM).
        kind: str. ``text`` or ``hybrid``.
        fusion: str. Hybrid only: ``sum``, ``gated`` or ``concat_mlp``.
        projection: str. Text features -> embedding: ``linear`` or ``mlp`` (2 layers).
        id_dropout: float. Hybrid only: rate at which training drops an item's id part.
        id_dropout_candidates: bool. Drop ids on the candidate side too (the candidate
            table / softmax items), not only in histories: cold items are candidates, so
            this trains the text-only path where cold start needs it (DropoutNet), at some
            cost in warm accuracy (docs/benchmarks.md).
        seed: int. Of the id dropout.
        encoder, max_tokens, pooling: the text encoder that produced ``text_dim`` features
            (a Hugging Face name or directory; :meth:`text_encoder` rebuilds it for exports
            that embed new items from their text).
        trainable_layers: int. 0: frozen encoder, cached features (fast path). N > 0:
            fine-tune the encoder's last N transformer layers (texts via :meth:`set_texts`).
        encoder_learning_rate: float. The fine-tuned layers' learning rate.
        whitening: str. ``none`` or ``zca``: the text features are whitened (mean and matrix
            fitted by :meth:`set_text_features`, kept as weights) before the projection.
        subspace_dim: int. ``fusion="subspace"``: the width of the frozen text part (0: half of
            ``embedding_dim``); the id embedding has the rest.
    """

    def __init__(self, num_indices: int, embedding_dim: int, text_dim: int, kind: str = "text",
                 fusion: str = "sum", projection: str = "linear", id_dropout: float = 0.0, seed: int = 0,
                 encoder: str = "", max_tokens: int = 64, pooling: str = "mean", trainable_layers: int = 0,
                 encoder_learning_rate: float = 1e-4, id_dropout_candidates: bool = False, whitening: str = "none",
                 subspace_dim: int = 0, **kwargs):
        super().__init__(**kwargs)
        if whitening not in WHITENING_TYPES:
            raise ValueError(f"whitening must be one of {', '.join(WHITENING_TYPES)}, got {whitening!r}")
        if whitening != "none" and trainable_layers:
            raise ValueError("whitening is fitted once on the frozen encoder's features; it cannot follow a "
                             "fine-tuned encoder (trainable_layers > 0)")
        if kind not in TEXT_LAYER_TYPES:
            raise ValueError(f"kind must be one of {', '.join(TEXT_LAYER_TYPES)}, got {kind!r}")
        if fusion not in FUSION_TYPES:
            raise ValueError(f"fusion must be one of {', '.join(FUSION_TYPES)}, got {fusion!r}")
        if projection not in PROJECTION_TYPES:
            raise ValueError(f"projection must be one of {', '.join(PROJECTION_TYPES)}, got {projection!r}")
        subspace_dim = subspace_dim or embedding_dim // 2
        if fusion == "subspace":
            if kind != "hybrid" or whitening != "none" or trainable_layers:
                raise ValueError("fusion=subspace is a hybrid tower's, on the frozen encoder's features as they are "
                                 "(kind=hybrid, whitening=none, trainable_layers=0)")
            if not 0 < subspace_dim < embedding_dim or subspace_dim > text_dim:
                raise ValueError(f"subspace_dim must be in [1, {min(embedding_dim - 1, text_dim)}] (below "
                                 f"embedding_dim {embedding_dim}, at most text_dim {text_dim}), got {subspace_dim}")
        self.subspace_dim = subspace_dim
        self.num_indices = num_indices
        self.embedding_dim = embedding_dim
        self.text_dim = text_dim
        self.kind = kind
        self.fusion = fusion
        self.projection = projection
        self.id_dropout = id_dropout
        self.id_dropout_candidates = id_dropout_candidates
        self.seed = seed
        self.encoder = encoder
        self.max_tokens = max_tokens
        self.pooling = pooling
        self.trainable_layers = trainable_layers
        self.encoder_learning_rate = encoder_learning_rate
        self.encoder_model = None
        if trainable_layers:
            from tfrec_attn.text.encoder import TextEncoder
            from tfrec_attn.text.pretrained import resolve_model_dir

            self.encoder_model = TextEncoder(resolve_model_dir(encoder), max_tokens, pooling,
                                             trainable_layers=trainable_layers, name="text_encoder")
            self.texts = tf.Variable(tf.fill([num_indices], ""), trainable=False, name="catalogue_texts")
        self.text_table = self.add_weight(name="text_features", shape=(num_indices, text_dim),
                                          initializer="zeros", trainable=False)
        self.whitening = whitening
        if whitening != "none":
            self.text_mean = self.add_weight(name="text_mean", shape=(text_dim,), initializer="zeros", trainable=False)
            self.text_whitening = self.add_weight(name="text_whitening", shape=(text_dim, text_dim),
                                                  initializer="identity", trainable=False)
        id_dim = embedding_dim
        if fusion == "subspace":  # no trained projection: the text part is the frozen subspace
            self.text_mean = self.add_weight(name="text_mean", shape=(text_dim,), initializer="zeros", trainable=False)
            self.text_basis = self.add_weight(name="text_basis", shape=(text_dim, subspace_dim), initializer="zeros",
                                              trainable=False)
            # One learned gain on the frozen coordinates (unit variance each), starting at the id rows'
            # spread: the history's inputs start on one scale, and the model learns how loud the text is.
            self.text_gain = self.add_weight(name="text_gain", shape=(),
                                             initializer=tf.keras.initializers.Constant(EMBEDDING_INIT_STDDEV))
            id_dim = embedding_dim - subspace_dim
        else:
            layers = [tf.keras.layers.Dense(embedding_dim, name="text_projection")]
            if projection == "mlp":
                layers = [tf.keras.layers.Dense(2 * embedding_dim, activation="gelu", name="text_hidden")] + layers
            self.project = tf.keras.Sequential(layers, name="text_mlp")
            self.project.build((None, text_dim))
        self.id_embedding = None
        if kind == "hybrid":
            self.id_embedding = tf.keras.layers.Embedding(
                num_indices, id_dim, name="item_id_embedding", embeddings_initializer=_embedding_init())
            self.id_embedding.build((None,))
            if fusion == "gated":
                self.gate = tf.keras.layers.Dense(embedding_dim, activation="sigmoid", name="gate")
                self.gate.build((None, 2 * embedding_dim))
            elif fusion == "concat_mlp":
                self.fuse = tf.keras.Sequential([
                    tf.keras.layers.Dense(2 * embedding_dim, activation="gelu", name="fuse_hidden"),
                    tf.keras.layers.Dense(embedding_dim, name="fuse_out")], name="fuse")
                self.fuse.build((None, 2 * embedding_dim))

    def set_text_features(self, features) -> None:
        """Fills the catalogue's text features ([num_indices, text_dim]; rows 0/1 unused) and,
        with whitening, fits its mean and matrix on the rows of real items."""
        self.text_table.assign(tf.cast(features, self.text_table.dtype))
        if self.whitening == "zca":
            from tfrec_attn.features.projections import zca_whitening

            rows = tf.convert_to_tensor(features).numpy()[FIRST_ITEM_INDEX:]
            mean, matrix = zca_whitening(rows[(rows != 0).any(axis=1)])
            self.text_mean.assign(mean)
            self.text_whitening.assign(matrix)
        if self.fusion == "subspace":
            from tfrec_attn.features.projections import principal_subspace

            rows = tf.convert_to_tensor(features).numpy()[FIRST_ITEM_INDEX:]
            mean, basis = principal_subspace(rows[(rows != 0).any(axis=1)], self.subspace_dim)
            self.text_mean.assign(mean)
            self.text_basis.assign(basis)

    @property
    def id_table(self):
        """The hybrid's id embedding variable [num_indices, embedding_dim] (None: a text tower)."""
        return None if self.id_embedding is None else self.id_embedding.embeddings

    def set_texts(self, texts) -> None:
        """Fine-tuning: the catalogue's texts in model-index order ([num_indices] str)."""
        self.texts.assign(tf.constant(list(texts)))

    def text_features(self, indices, training=None):
        """Encoder features [..., text_dim] of item indices: the cached table, or (fine-tuning)
        the encoder over each distinct item of the batch."""
        if self.encoder_model is None:
            return tf.gather(self.text_table, indices)
        unique, position = tf.unique(tf.reshape(indices, [-1]))
        vectors = self.encoder_model(tf.gather(self.texts, unique), training=training)
        return tf.reshape(tf.gather(vectors, position), tf.concat([tf.shape(indices), [self.text_dim]], 0))

    def call(self, indices, training=None):
        if not indices.dtype.is_integer:  # Keras builds layers on float placeholders
            indices = tf.cast(indices, tf.int64)
        return self.embed_text_features(indices, self.text_features(indices, training), training=training)

    def embed_text_features(self, indices, features, training=None):
        features = tf.cast(features, tf.float32)
        if self.whitening != "none":
            features = tf.tensordot(features - self.text_mean, self.text_whitening, axes=1)  # (x - mean) @ W
        if self.fusion == "subspace":
            text = tf.cast(self.text_gain * tf.tensordot(features - self.text_mean, self.text_basis, axes=1),
                           self.compute_dtype)
        else:
            text = self.project(tf.cast(features, self.compute_dtype))
        if self.id_embedding is None:
            return text
        # Unknown items, and training items whose id is dropped, read the OOV row: a learned
        # "item known by its text only" embedding (a mask token), so text-only items land
        # where the model expects items, not at a smaller norm.
        if training and self.id_dropout > 0:
            drop = tf.random.uniform(tf.shape(indices), seed=self.seed) < self.id_dropout
            indices = tf.where(drop & (indices >= FIRST_ITEM_INDEX), tf.ones_like(indices), indices)
        ids = self.id_embedding(indices)
        if self.fusion == "sum":
            return ids + text
        if self.fusion == "subspace":  # [frozen text subspace ; ids in its complement]
            return tf.concat([text, ids], axis=-1)
        both = tf.concat([ids, text], axis=-1)
        if self.fusion == "gated":
            gate = self.gate(both)
            return gate * ids + (1.0 - gate) * text
        return self.fuse(both)

    def all_embeddings(self, training=None):
        """The table of every index; in training with ``id_dropout_candidates``, the id
        dropout hits a fresh random set of items at each call (seen by their text alone)."""
        return self(tf.range(self.num_indices), training=training and self.id_dropout_candidates)

    def candidate_embeddings(self, indices, training=None):
        """Embeddings of items as softmax candidates (labels, sampled negatives)."""
        return self(indices, training=training and self.id_dropout_candidates)

    def text_encoder(self):
        """The :class:`~tfrec_attn.text.encoder.TextEncoder` whose features this tower
        reads (in-graph tokenization; for exports that embed new items): the fine-tuned one,
        or the frozen pretrained one."""
        if self.encoder_model is not None:
            return self.encoder_model
        from tfrec_attn.text.encoder import TextEncoder
        from tfrec_attn.text.pretrained import resolve_model_dir

        encoder = TextEncoder(resolve_model_dir(self.encoder), self.max_tokens, self.pooling, name="text_encoder")
        if encoder.hidden_size != self.text_dim:
            raise ValueError(f"encoder {self.encoder!r} gives {encoder.hidden_size} features; this tower was "
                             f"trained on {self.text_dim}")
        return encoder

    @property
    def reads_text(self) -> bool:
        return reads_text(self.kind)

    def get_config(self):
        return {**super().get_config(), "num_indices": self.num_indices, "embedding_dim": self.embedding_dim,
                "text_dim": self.text_dim, "kind": self.kind, "fusion": self.fusion,
                "projection": self.projection, "id_dropout": self.id_dropout, "seed": self.seed,
                "encoder": self.encoder, "max_tokens": self.max_tokens, "pooling": self.pooling,
                "trainable_layers": self.trainable_layers, "encoder_learning_rate": self.encoder_learning_rate,
                "id_dropout_candidates": self.id_dropout_candidates, "whitening": self.whitening,
                "subspace_dim": self.subspace_dim}


def build_item_tower(config, num_indices: int, embedding_dim: int, *, text_dim: int = 0, seed: int = 0):
    """The item tower of ``model.item_tower`` (an :class:`ItemTowerConfig`, or just its type)."""
    kind = config if isinstance(config, str) else config.type
    if kind == "id":
        return IdItemTower(num_indices, embedding_dim, name="item_tower")
    if kind == "ensemble":
        raise ValueError("model.item_tower.type=ensemble is two models, not one tower: "
                         "tfrec_attn.training.ensemble trains them")
    if reads_text(kind):
        if not text_dim:
            raise ValueError(f"model.item_tower.type={kind} needs the text encoder's feature width")
        return TextItemTower(num_indices, embedding_dim, text_dim, kind, config.fusion, config.projection,
                             config.id_dropout, seed, config.encoder, config.max_tokens, config.pooling,
                             config.trainable_layers, config.encoder_learning_rate, config.id_dropout_candidates,
                             config.whitening, config.subspace_dim, name="item_tower")
    raise ValueError(f"model.item_tower.type must be one of {', '.join(ITEM_TOWER_TYPES)}, got {kind!r}")
