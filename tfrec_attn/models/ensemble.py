"""One retrieval model for every item: an id model and a text model, trained apart, whose
scores add (``model.item_tower.type: ensemble``; EnsRec, 2025).

Each part is a :class:`~tfrec_attn.models.retrieval.SequentialRetrievalModel` (the same
transformer user tower; an id item tower, and a text item tower that embeds any item from its
text). The ensemble is one two-tower model in one score space, so the export, its index and
``tfrec-attn index add-items`` serve it unchanged::

    query(user)      = [ q_id(user) ; q_text(user) ; 1 ]
    known item i     = [ e_id(i)    ; w · e_text(i) ; 0 ]   ->  s_id + w · s_text
    new item (text)  = [ 0          ; a · e_text(t) ; b ]   ->  a · s_text + b

``w`` (how much the text part adds to known items), and the new-item scale ``a`` and offset
``b`` are fitted after training, on validation (:mod:`tfrec_attn.training.ensemble`): ``w``
for NDCG@10, ``(a, b)`` on a pseudo-cold split so that a new item is recommended as often,
relative to how often it is wanted, as a known one (calibration), then ``a`` for NDCG@10 at
that calibration. They are weights of the model (checkpointed and exported), not settings.
"""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register
from tfrec_attn.features.vocab import FIRST_ITEM_INDEX
from tfrec_attn.models.base import RecommenderModel

# What the new-item score's offset is fitted on (tfrec_attn.training.ensemble): ``held_out``, a copy
# of the text part trained without the pseudo-cold items (they score as a truly new item does);
# ``in_sample``, the text part itself (which trained on them, so they score as known items do).
NEW_ITEM_CALIBRATIONS = ("held_out", "in_sample")


def _deserialize(value):
    return tf.keras.utils.deserialize_keras_object(value) if isinstance(value, dict) else value


class EnsembleItemTower:
    """What the export and the evaluation ask of an ensemble's item tower: it reads text (a
    new item is placed by the text part), its encoder is the text part's, and a history
    item's vector is the id part's (which the explanations' attention reads)."""

    kind = "ensemble"
    reads_text = True

    def __init__(self, model):
        self._model = model

    @property
    def num_indices(self):
        return self._model.num_indices

    @property
    def encoder_model(self):
        return getattr(self._model.text_model.item_tower, "encoder_model", None)

    def text_encoder(self):
        return self._model.text_model.item_tower.text_encoder()

    def __call__(self, indices, training=None):
        return self._model.id_model.item_tower(indices, training=training)


@register
class EnsembleRetrievalModel(RecommenderModel):
    """The id + text score ensemble (module docstring).

    Args:
        id_model: SequentialRetrievalModel with an id item tower (or its serialized config).
        text_model: SequentialRetrievalModel whose item tower reads text (or its config).

    The fitted ``text_weight`` (w), ``new_item_scale`` (a) and ``new_item_offset`` (b) are
    weights (:meth:`set_combination`). Each part trains on its own (the retrieval recipe);
    this model is only combined, never fitted end to end.
    """

    def __init__(self, id_model, text_model, **kwargs):
        super().__init__(**kwargs)
        self.id_model = _deserialize(id_model)
        self.text_model = _deserialize(text_model)
        if self.id_model.num_indices != self.text_model.num_indices:
            raise ValueError(f"the parts' vocabularies differ: {self.id_model.num_indices} vs "
                             f"{self.text_model.num_indices} indices")
        if not self.text_model.item_tower.reads_text:
            raise ValueError("the text part's item tower must read text (type text or hybrid)")
        self.num_indices = self.id_model.num_indices
        self.max_len = self.id_model.max_len
        self.text_weight = self.add_weight(name="text_weight", shape=(), initializer="zeros", trainable=False)
        self.new_item_scale = self.add_weight(name="new_item_scale", shape=(), initializer="ones", trainable=False)
        self.new_item_offset = self.add_weight(name="new_item_offset", shape=(), initializer="zeros",
                                               trainable=False)

    @property
    def item_tower(self):
        return EnsembleItemTower(self)

    @property
    def text_slice(self) -> slice:
        """Where the text part's coordinates sit in a query or candidate vector."""
        start = int(self.id_model.item_embeddings().shape[-1])
        return slice(start, start + int(self.text_model.item_embeddings().shape[-1]))

    def set_combination(self, text_weight: float, new_item_scale: float, new_item_offset: float) -> None:
        self.text_weight.assign(text_weight)
        self.new_item_scale.assign(new_item_scale)
        self.new_item_offset.assign(new_item_offset)

    def combination(self) -> dict:
        return {"text_weight": float(self.text_weight.numpy()), "new_item_scale": float(self.new_item_scale.numpy()),
                "new_item_offset": float(self.new_item_offset.numpy())}

    def get_config(self):
        serialize = tf.keras.utils.serialize_keras_object
        return {"name": self.name, "id_model": serialize(self.id_model), "text_model": serialize(self.text_model)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def build_weights(self):
        self.id_model.build_weights()
        self.text_model.build_weights()
        return self

    # -- the one score space --------------------------------------------------------------
    def _known_and_new(self, id_vectors, text_vectors, known):
        """[e_id ; w e_text ; 0] where ``known``, [0 ; a e_text ; b] elsewhere."""
        id_vectors = tf.cast(id_vectors, tf.float32)
        text_vectors = tf.cast(text_vectors, tf.float32)
        zero = tf.zeros_like(text_vectors[..., :1])
        as_known = tf.concat([id_vectors, self.text_weight * text_vectors, zero], axis=-1)
        as_new = tf.concat([tf.zeros_like(id_vectors), self.new_item_scale * text_vectors,
                            zero + self.new_item_offset], axis=-1)
        return tf.where(known[..., tf.newaxis], as_known, as_new)

    def _query(self, id_query, text_query):
        id_query = tf.cast(id_query, tf.float32)
        return tf.concat([id_query, tf.cast(text_query, tf.float32), tf.ones_like(id_query[..., :1])], axis=-1)

    @property
    def num_ratings(self) -> int:
        """The parts' rating levels (> 0: rating-aware histories; both parts read the same)."""
        return self.id_model.num_ratings

    def call(self, history, training=False, ratings=None):
        """Query vectors [b, d_id + d_text + 1] of histories [b, H] of model indices (and
        their events' ratings [b, H], for rating-aware parts)."""
        return self._query(self.id_model(history, training=training, ratings=ratings),
                           self.text_model(history, training=training, ratings=ratings))

    def position_queries(self, history, ratings=None):
        return self._query(self.id_model.position_queries(history, ratings),
                           self.text_model.position_queries(history, ratings))

    def candidate_vectors(self, indices, training=False):
        """Known indices as known items; OOV (an id the model does not know) as a new item
        with no text (the signatures that take no text score it -inf anyway)."""
        return self._known_and_new(self.id_model.candidate_vectors(indices, training=training),
                                   self.text_model.candidate_vectors(indices, training=training),
                                   indices >= FIRST_ITEM_INDEX)

    def text_item_vectors(self, indices, text_features):
        """Items by index and text features: a known index is a known item (its text read
        by the text part), an unknown one (OOV) a new item placed by its text alone."""
        return self._known_and_new(self.id_model.candidate_vectors(indices),
                                   self.text_model.text_item_vectors(indices, text_features),
                                   indices >= FIRST_ITEM_INDEX)

    def new_item_vectors(self, text_features):
        return self.text_item_vectors(tf.ones(tf.shape(text_features)[:1], tf.int64), text_features)

    def item_embeddings(self):
        """Candidate vectors of the catalogue items [num_indices - 2, d_id + d_text + 1]."""
        id_table = self.id_model.item_embeddings()
        return self._known_and_new(id_table, self.text_model.item_embeddings(),
                                   tf.ones(tf.shape(id_table)[:1], tf.bool))

    def encode(self, history, training=False, rating_ids=None):
        """The id part's user-tower outputs (its self-attention is what the plots show)."""
        return self.id_model.encode(history, training=training, rating_ids=rating_ids)

    def compact(self, history, ratings=None):
        return self.id_model.compact(history, ratings)

    def explain_history(self, history, ratings=None):
        """The id part's attention (it scores known items)."""
        return self.id_model.explain_history(history, ratings)

    @tf.function(reduce_retracing=True)
    def score_items(self, history, extra_vectors=None, ratings=None):
        user = self(history, ratings=ratings)
        table = self.item_embeddings()
        if extra_vectors is not None:
            table = tf.concat([table, tf.cast(extra_vectors, tf.float32)], axis=0)
        return tf.matmul(user, table, transpose_b=True)

    def compute_loss(self, inputs, training=False):
        raise NotImplementedError("an ensemble is not trained end to end: each part trains on its own "
                                  "(tfrec_attn.training.ensemble)")
