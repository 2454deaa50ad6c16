"""What a multi-interest model's ``interests`` signature says about each interest, in the
graph: its weight, its attention over the history, its top history items and a label
from the genres and salient words of the items it attends to
(:mod:`tfrec_attn.features.item_terms`).

Terms are ranked by their attention mass. ``exclusive=True`` ranks them by mass times
exclusivity instead, the share of the term's mass over the K interests that this interest
holds (the frequency-times-exclusivity ranking of topic-model labels, FREX), so that a
user's commonest genre does not lead every interest's label; measured on ML-100K and
amazon-scientific (docs/benchmarks.md, 2026-12-08) it does not make the labels more telling
of what each interest retrieves, so the export keeps the mass. With K = 1 both agree."""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.vocab import FIRST_ITEM_INDEX

GENRES_PER_LABEL = 2
WORDS_PER_LABEL = 3
TOP_ITEMS = 3


def _pad_columns(values, width: int, fill):
    """[..., n] -> [..., width] (n <= width), padded with ``fill``."""
    missing = width - tf.shape(values)[-1]
    paddings = tf.concat([tf.zeros([tf.rank(values) - 1, 2], tf.int32), [[0, missing]]], 0)
    return tf.pad(values, paddings, constant_values=fill)


def _join(strings, separator: str):
    """[..., n] strings -> [...]: the non-empty ones joined."""
    return tf.strings.reduce_join(tf.ragged.boolean_mask(strings, strings != ""), axis=-1, separator=separator)


class InterestLabels(tf.Module):
    """Terms and top items of each interest.

    Args:
        genres, words: ItemTerms over the model's index space.
        item_ids: list of str. The vocabulary's raw ids (model index ``FIRST_ITEM_INDEX + i``).
        exclusive: bool. Rank terms by mass x exclusivity (the module docstring) instead of
            by attention mass alone.

    Call arguments:
        compact: int [b, L]. The compact history the interests attend to (model indices).
        attention: float [b, K, L]. Each interest's attention over it.

    Returns a dict: ``genres`` tf.string [b, K, 2], ``words`` [b, K, 3], ``labels`` [b, K]
    ("Western, Crime · outlaw, sheriff"; "" for an interest over nothing describable), and
    ``top_items`` [b, K, 3]: the raw ids of the interest's most attended history items
    ("" past the history's length).
    """

    def __init__(self, genres, words, item_ids, exclusive: bool = False, name="interest_labels"):
        super().__init__(name=name)
        self.exclusive = exclusive
        self.genre_ids = tf.constant(genres.term_ids)
        self.genre_weights = tf.constant(genres.weights)
        self.genre_vocabulary = tf.constant(genres.vocabulary)
        self.word_ids = tf.constant(words.term_ids)
        self.word_weights = tf.constant(words.weights)
        self.word_vocabulary = tf.constant(words.vocabulary)
        self.raw_ids = tf.constant([""] * FIRST_ITEM_INDEX + list(item_ids))

    def _terms(self, term_ids, term_weights, vocabulary, compact, attention, n: int):
        """The ``n`` best terms of each interest (attention mass, times exclusivity when
        ``exclusive``): [b, K, n] strings, "" for a term no attention reaches."""
        ids = tf.gather(term_ids, compact)  # [b, L, m]
        weights = tf.gather(term_weights, compact)
        mass = attention[:, :, :, tf.newaxis] * weights[:, tf.newaxis]  # [b, K, L, m]
        shape = tf.shape(mass)
        num_terms = tf.shape(vocabulary)[0]
        rows = tf.range(shape[0] * shape[1])  # one row per (user, interest)
        segments = tf.reshape(rows, [shape[0], shape[1], 1, 1]) * num_terms + ids[:, tf.newaxis]
        totals = tf.math.unsorted_segment_sum(tf.reshape(mass, [-1]), tf.reshape(segments, [-1]),
                                              shape[0] * shape[1] * num_terms)
        totals = tf.reshape(totals, [shape[0], shape[1], num_terms])
        rank_by = totals
        if self.exclusive:  # mass x (this interest's share of the term's mass over the K interests)
            rank_by = totals * tf.math.divide_no_nan(totals, tf.reduce_sum(totals, axis=1, keepdims=True))
        _, best = tf.math.top_k(rank_by, k=tf.minimum(n, num_terms))
        values = tf.gather(totals, best, batch_dims=2)
        names = tf.where(values > 1e-6, tf.gather(vocabulary, best), "")
        return _pad_columns(names, n, "")

    def __call__(self, compact, attention):
        attention = tf.cast(attention, tf.float32)
        genres = self._terms(self.genre_ids, self.genre_weights, self.genre_vocabulary, compact, attention,
                             GENRES_PER_LABEL)
        words = self._terms(self.word_ids, self.word_weights, self.word_vocabulary, compact, attention,
                            WORDS_PER_LABEL)
        parts = tf.stack([_join(genres, ", "), _join(words, ", ")], axis=-1)
        values, positions = tf.math.top_k(attention, k=tf.minimum(TOP_ITEMS, tf.shape(attention)[-1]))
        items = tf.gather(tf.broadcast_to(compact[:, tf.newaxis], tf.shape(attention)), positions, batch_dims=2)
        top_items = tf.where(values > 0, tf.gather(self.raw_ids, items), "")
        return {"genres": genres, "words": words, "labels": _join(parts, " · "),
                "top_items": _pad_columns(top_items, TOP_ITEMS, "")}
