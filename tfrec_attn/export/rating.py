"""The ``rating`` serving export of a matrix-completion model (the kernel autoencoder): the
completed rating matrix of every training rating, looked up by raw ids.

Signature ``serving_default``: ``user_id`` string [B], ``item_id`` string [B] ->
``rating`` float32 [B] (the predicted rating, in the training ratings' range) and
``known_user`` bool [B]. A user without a training rating gets the item's mean completed
rating over every user; an item without one, the out-of-vocabulary row's (what the model
completes for an item nobody rated). ``user_id`` and ``item_id`` of different lengths are
INVALID_ARGUMENT. Stock TensorFlow ops only: the stock ``tensorflow/serving`` binary serves it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfrec_attn.features.vocab import ItemVocabulary

_IDS = tf.TensorSpec([None], tf.string)


def with_unknown_user(completed) -> np.ndarray:
    """float32 [items, users + 1]: the completed matrix and, last, the column of a user without a
    training rating: each item's mean over every user."""
    completed = np.asarray(completed, np.float32)
    return np.concatenate([completed, completed.mean(axis=1, keepdims=True)], axis=1)


class RatingTableServingModule(tf.Module):
    """Args:
        completed: float [items, users]. The completed matrix (rows: model item indices).
        vocabulary: ItemVocabulary. Its rows' items.
        users: sequence of str. Its columns' users.
    """

    def __init__(self, completed, vocabulary: ItemVocabulary, users):
        super().__init__()
        completed = np.asarray(completed, np.float32)
        if completed.shape != (vocabulary.num_indices, len(users)):
            raise ValueError(f"completed matrix is {completed.shape}, expected ({vocabulary.num_indices}, "
                             f"{len(users)}) (items x users)")
        self.table = tf.Variable(with_unknown_user(completed), trainable=False, name="completed_ratings")
        self.items = vocabulary.lookup_layer()
        self.users = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant([str(u) for u in users]),
                                                tf.range(len(users), dtype=tf.int64)), default_value=-1)
        self.num_users = len(users)

    @tf.function(input_signature=[_IDS, _IDS])
    def serving_default(self, user_id, item_id):
        same = tf.debugging.assert_equal(tf.size(user_id), tf.size(item_id),
                                         message="user_id and item_id must have the same length")
        with tf.control_dependencies([same]):  # checked before anything reads both
            user_id, item_id = tf.identity(user_id), tf.identity(item_id)
        column = self.users.lookup(user_id)
        known = column >= 0
        column = tf.where(known, column, self.num_users)
        rows = self.items(item_id)
        return {"rating": tf.gather_nd(self.table, tf.stack([rows, column], axis=1)), "known_user": known}


def export_rating_table(completed, vocabulary: ItemVocabulary, users, base_path: str, *, model_name: str = "rating",
                        version: int | None = None) -> str:
    """Exports a completed rating matrix (TF Serving layout); returns the version directory."""
    from tfrec_attn.export.saved_model import publish_saved_model

    module = RatingTableServingModule(completed, vocabulary, users)
    some_items = np.resize(np.asarray(vocabulary.item_ids, dtype=object), 8)
    some_users = np.resize(np.asarray([str(u) for u in users], dtype=object), 8)
    warmup = [("serving_default", {"user_id": some_users[:n], "item_id": some_items[:n]}) for n in (1, 8)]
    return publish_saved_model(module, {"serving_default": module.serving_default}, base_path, model_name, version,
                               warmup=warmup)
