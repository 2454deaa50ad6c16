"""Serving signatures on raw features (string ids in, string ids out)."""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.vocab import FIRST_ITEM_INDEX, ItemVocabulary

HISTORY_SPEC = tf.TensorSpec([None, None], tf.string, name="history")


class RetrievalServingModule(tf.Module):
    """What a retrieval export serves.

    Signature ``serving_default``:
        inputs:  ``history``: tf.string [batch, None] raw item ids, oldest first,
                 right-padded with ``""`` (ignored). Unknown ids are OOV: ignored, never an error.
        outputs: ``item_ids``: tf.string [batch, K] and ``scores``: tf.float32 [batch, K],
                 best first, never an item of ``history``.

    Signature ``user_embedding``: ``history`` -> ``embedding`` float32 [batch, d], for
    serving stacks that bring their own nearest-neighbour index.

    Args:
        model: SequentialRetrievalModel (trained).
        vocabulary: ItemVocabulary. Embedded in the graph (no sidecar files).
        k: int. Results per query.
        index: str. ``brute_force`` (stock TF ops only) or ``scann``.
    """

    def __init__(self, model, vocabulary: ItemVocabulary, k: int = 100, index: str = "brute_force",
                 **index_options):
        super().__init__(name="retrieval")
        from tfrec_attn.export.index import build_index

        self.model = model
        self.k = int(k)
        self.index_kind = index
        self.lookup = vocabulary.lookup_layer()
        candidates = tf.cast(model.item_embeddings(), tf.float32)
        self.index = build_index(index, candidates, tf.constant(list(vocabulary.item_ids)), self.k,
                                 **index_options)

    def _user(self, history):
        ids = self.lookup(history)
        return ids, tf.cast(self.model(ids, training=False), tf.float32)

    @tf.function(input_signature=[HISTORY_SPEC])
    def serving_default(self, history):
        ids, user = self._user(history)
        if self.index_kind == "brute_force":
            exclude = tf.where(ids >= FIRST_ITEM_INDEX, ids - FIRST_ITEM_INDEX, -1)
        else:
            exclude = history
        scores, item_ids = self.index.query(user, exclude, k=self.k)
        return {"item_ids": item_ids, "scores": scores}

    @tf.function(input_signature=[HISTORY_SPEC])
    def user_embedding(self, history):
        return {"embedding": self._user(history)[1]}

    def signatures(self) -> dict:
        return {
            "serving_default": self.serving_default.get_concrete_function(),
            "user_embedding": self.user_embedding.get_concrete_function(),
        }
