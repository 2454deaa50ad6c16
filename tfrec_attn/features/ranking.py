"""The ranking model's features: item side features, user features, per-event features.

Each is computed by one TF function or Keras layer, used both to build training data and
inside the serving graph, so training and serving cannot disagree:

* :func:`item_feature_table`: genre multi-hot + release-decade one-hot (+ frozen text
  encodings) per model item index;
* :class:`UserFeatureEncoder`: raw user features (age, gender, occupation, zip code) ->
  ids, index 0 = unknown (ML-100K's ``u.user``; ML-1M's ``users.dat``);
* :func:`event_gap_ids` / :func:`event_rating_ids`: each history event's time before the
  user's newest event (log2 buckets of days) and its rating, 0 = unknown.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from tfrec_attn.features.serializable import register

USER_FEATURES = ("age", "gender", "occupation", "zip")
AGE_BOUNDARIES = (18, 25, 35, 45, 50, 56)  # ML-1M's age groups; ML-100K ages fall in them
DECADES = tuple(range(1920, 2030, 10))  # release decade buckets (before 1920 = the first)
NUM_GAP_BUCKETS = 14  # event time gaps: 0 = unknown, then log2 buckets of days before the newest event


def item_feature_table(dataset, vocabulary, text_features=None) -> np.ndarray:
    """Side features of every model index: ``[num_indices, genres + decades (+ text)]``.

    Rows 0 (padding) and 1 (OOV) are zero. Genres are the dataset's (sorted); an item
    without metadata has an all-zero row.

    Args:
        dataset: Dataset (``items``: genres, year).
        vocabulary: ItemVocabulary of the model.
        text_features: float [num_indices, T] or None, appended (e.g. MiniLM encodings).
    """
    genres = sorted({g for item in dataset.items.values() for g in item.genres})
    column = {g: i for i, g in enumerate(genres)}
    table = np.zeros((vocabulary.num_indices, len(genres) + len(DECADES) + 1), np.float32)
    for index, item_id in zip(vocabulary.to_index(np.arange(len(vocabulary))), vocabulary.item_ids):
        item = dataset.items.get(item_id)
        if item is None:
            continue
        for genre in item.genres:
            table[index, column[genre]] = 1.0
        if item.year is not None:
            table[index, len(genres) + int(np.searchsorted(DECADES, item.year, side="right"))] = 1.0
    if text_features is not None:
        table = np.concatenate([table, np.asarray(text_features, np.float32)], axis=1)
    return table


@register
class UserFeatureEncoder(tf.keras.layers.Layer):
    """Raw user features -> ids ``[b, 4]`` (age group, gender, occupation, zip code's first
    character), each 0 when unknown (age <= 0, an empty or unseen string).

    Args:
        genders: list of str. Known genders (from the training data).
        occupations: list of str. Known occupations.

    Call arguments:
        age: int64 [b]. gender, occupation, zip_code: string [b].
    """

    def __init__(self, genders=(), occupations=(), **kwargs):
        super().__init__(**kwargs)
        self.genders = [str(g) for g in genders]
        self.occupations = [str(o) for o in occupations]
        self.gender_lookup = tf.keras.layers.StringLookup(vocabulary=self.genders or [""], num_oov_indices=1,
                                                          name="gender")
        self.occupation_lookup = tf.keras.layers.StringLookup(vocabulary=self.occupations or [""],
                                                              num_oov_indices=1, name="occupation")
        self.zip_lookup = tf.keras.layers.StringLookup(vocabulary=list("0123456789"), num_oov_indices=1, name="zip")

    @property
    def sizes(self) -> list[int]:
        """Vocabulary size of each feature, unknown (0) included."""
        return [len(AGE_BOUNDARIES) + 2, len(self.genders) + 1, len(self.occupations) + 1, 11]

    def call(self, age, gender, occupation, zip_code):
        age = tf.cast(age, tf.int64)
        group = tf.searchsorted(tf.constant(AGE_BOUNDARIES, tf.int64), age, side="right", out_type=tf.int64)
        age_id = tf.where(age > 0, group + 1, 0)
        zip_id = tf.where(tf.strings.length(zip_code) > 0, self.zip_lookup(tf.strings.substr(zip_code, 0, 1)), 0)
        return tf.stack([age_id, self.gender_lookup(gender), self.occupation_lookup(occupation), zip_id], axis=1)

    def encode(self, users) -> np.ndarray:
        """Ids of a list of :class:`tfrec_attn.data.dataset.User` (numpy [n, 4], eager)."""
        if not users:
            return np.zeros((0, len(USER_FEATURES)), np.int64)
        return self(tf.constant([u.age or 0 for u in users], tf.int64),
                    tf.constant([u.gender for u in users]), tf.constant([u.occupation for u in users]),
                    tf.constant([u.zip_code for u in users])).numpy()

    def get_config(self):
        return {**super().get_config(), "genders": self.genders, "occupations": self.occupations}

    @classmethod
    def from_dataset(cls, dataset) -> UserFeatureEncoder:
        users = getattr(dataset, "users", None) or {}
        return cls(sorted({u.gender for u in users.values() if u.gender}),
                   sorted({u.occupation for u in users.values() if u.occupation}))

    def save(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"genders": self.genders, "occupations": self.occupations}, handle, indent=1)
        return path

    @classmethod
    def load(cls, path: str) -> UserFeatureEncoder:
        with open(path, encoding="utf-8") as handle:
            return cls(**json.load(handle))


def event_gap_ids(timestamps, valid, num_buckets: int):
    """Each event's time before the row's newest valid event, as ids: 0 = unknown
    (padding, or a timestamp <= 0), then ``1 + floor(log2(1 + days))`` capped at
    ``num_buckets - 1``. TF ops (numpy in, tensors out)."""
    timestamps = tf.cast(timestamps, tf.int64)
    valid = tf.logical_and(tf.cast(valid, tf.bool), timestamps > 0)
    newest = tf.reduce_max(tf.where(valid, timestamps, tf.int64.min), axis=1, keepdims=True)
    days = tf.cast(tf.maximum(newest - timestamps, 0), tf.float64) / 86400.0
    bucket = 1 + tf.cast(tf.floor(tf.math.log(1.0 + days) / tf.math.log(tf.constant(2.0, tf.float64))), tf.int64)
    return tf.where(valid, tf.minimum(bucket, num_buckets - 1), 0)


def event_rating_ids(ratings, num_ratings: int):
    """Ratings -> ids ``1 .. num_ratings`` (rounded, clipped); 0 for NaN/unknown or <= 0."""
    ratings = tf.cast(ratings, tf.float32)
    known = tf.logical_and(tf.math.is_finite(ratings), ratings > 0)
    ids = tf.clip_by_value(tf.cast(tf.round(tf.where(known, ratings, 0.0)), tf.int64), 1, max(num_ratings, 1))
    return tf.where(known, ids, 0)
