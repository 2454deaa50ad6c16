"""The ranking and rating recipes' input pipeline: one row per user event (the history
before it, with each event's rating and time-gap ids), and the ``tf.data`` stream that
draws each row's negatives.

A row's candidates are its positive first, then ``hard`` negatives drawn from the row's
pool (the retrieval model's top items for its history) and ``random`` ones from the
catalogue. Draws are stateless and keyed on the example's place in the stream, so how a
global batch is split over replicas changes nothing: N replicas train what one device trains.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfrec_attn.features.ranking import NUM_GAP_BUCKETS, event_gap_ids, event_rating_ids
from tfrec_attn.features.vocab import FIRST_ITEM_INDEX


@dataclasses.dataclass
class EventRows:
    """Ranking rows (one per user event), numpy.

    Attributes:
        history: int64 [n, H]. Model indices, oldest first, right-padded with 0.
        ratings: int64 [n, H]. Rating ids (0 = unknown/padding).
        gaps: int64 [n, H]. Time-gap ids (0 = unknown/padding).
        users: int64 [n]. Split user index of each row.
        positive: int64 [n]. The event's item (model index).
        rating: float32 [n]. Its rating (NaN if none).
        pool: int64 [n, P] or None. Hard negatives (model indices, 0 = none).
        queries: float32 [n, K, d] or None. A frozen retrieval model's query vectors for each
            row's history (the ranker's ``retrieval_query`` input).
    """

    history: np.ndarray
    ratings: np.ndarray
    gaps: np.ndarray
    users: np.ndarray
    positive: np.ndarray
    rating: np.ndarray
    pool: np.ndarray | None = None
    queries: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.positive)


def history_arrays(histories, timestamps, ratings, width: int, num_ratings: int):
    """Right-padded ``[n, width]`` model-index histories (newest ``width`` of each) with their
    rating and time-gap ids (:mod:`tfrec_attn.features.ranking`)."""
    n = len(histories)
    ids = np.zeros((n, width), np.int64)
    times = np.zeros((n, width), np.int64)
    values = np.full((n, width), np.nan, np.float32)
    for row, (h, t, r) in enumerate(zip(histories, timestamps, ratings)):
        h = np.asarray(h)[-width:]
        ids[row, :len(h)] = h
        times[row, :len(h)] = np.asarray(t)[-width:]
        values[row, :len(h)] = np.asarray(r)[-width:]
    valid = ids > 0
    gaps = event_gap_ids(times, valid, NUM_GAP_BUCKETS).numpy() if n else np.zeros((0, width), np.int64)
    rating_ids = event_rating_ids(values, num_ratings).numpy() if n else np.zeros((0, width), np.int64)
    return ids, np.where(valid, rating_ids, 0), np.where(valid, gaps, 0)


def sequence_event_rows(split, to_model: np.ndarray, *, include_validation: bool, positions_per_user: int,
                        max_len: int, num_ratings: int) -> EventRows:
    """The rows of a leave-one-out split's training part: the newest ``positions_per_user``
    events of every user (0 = all but the first), each with the ``max_len`` events before it.

    Args:
        split: LeaveOneOutSplit.
        to_model: int64 [num_items]. The split's catalogue -> the model's item indices.
    """
    histories, times, values, users, positive, rating = [], [], [], [], [], []
    parts = zip(split.train_part("sequences", include_validation),
                split.train_part("timestamps", include_validation),
                split.train_part("ratings", include_validation))
    for user, (seq, ts, rt) in enumerate(parts):
        first = 1 if not positions_per_user else max(1, len(seq) - positions_per_user)
        for t in range(first, len(seq)):
            lo = max(0, t - max_len)
            histories.append(to_model[seq[lo:t]])
            times.append(ts[lo:t])
            values.append(rt[lo:t])
            users.append(user)
            positive.append(to_model[seq[t]])
            rating.append(rt[t])
    ids, rating_ids, gaps = history_arrays(histories, times, values, max_len, num_ratings)
    return EventRows(ids, rating_ids, gaps, np.asarray(users, np.int64), np.asarray(positive, np.int64),
                     np.asarray(rating, np.float32))


def stage_inputs(split, to_model: np.ndarray, stage: str, users, *, max_len: int, num_ratings: int,
                 user_features: np.ndarray) -> dict:
    """Network inputs (without candidates) for ``users``' ``stage`` histories of a
    leave-one-out split: every event before the validation (or test) target."""
    position = {"validation": 2, "test": 1}[stage]
    histories = [to_model[split.sequences[u][:-position]] for u in users]
    times = [split.timestamps[u][:-position] for u in users]
    values = [split.ratings[u][:-position] for u in users]
    ids, ratings, gaps = history_arrays(histories, times, values, max_len, num_ratings)
    return {"history": ids, "history_ratings": ratings, "history_gaps": gaps, "user_features": user_features[users]}


def ranking_dataset(rows: EventRows, user_features: np.ndarray, num_indices: int, *, input_context,
                    batch_size: int, seed: int, hard: int, random: int, event_feature_dropout: float,
                    repeat: bool = True):
    """The training stream of ``rows``: ``(inputs, {"clicks", "rating"})`` batches of the
    per-replica size of the global ``batch_size``, each row's candidates = its positive, then
    ``hard`` negatives from its pool and ``random`` ones uniform over ``[2, num_indices)``; a
    drawn negative equal to the positive (or an empty pool slot) becomes another item. With
    ``event_feature_dropout`` a row's ratings and time gaps are dropped (as serving by ids
    alone sees them). Rows with ``queries`` carry them as ``retrieval_query``."""
    import tensorflow as tf

    first_item, last_item = FIRST_ITEM_INDEX, num_indices
    tensors = {"history": rows.history, "history_ratings": rows.ratings, "history_gaps": rows.gaps,
               "user_features": user_features[rows.users], "positive": rows.positive, "rating": rows.rating}
    if hard:
        tensors["pool"] = rows.pool
    if rows.queries is not None:
        tensors["retrieval_query"] = rows.queries
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    span = last_item - first_item

    def make(features, example_seed):
        # Per example (keyed on its place in the stream), so the draws do not depend on how
        # the global batch is split over replicas: N replicas train what one device trains.
        example_seed = tf.cast(example_seed, tf.int64)
        positive = features["positive"][tf.newaxis]
        parts = [positive]
        if hard:
            pool = features["pool"]
            take = tf.random.stateless_uniform([hard], example_seed, 0, tf.shape(pool)[0], tf.int32)
            parts.append(tf.gather(pool, take))
        if random:
            parts.append(tf.random.stateless_uniform([random], example_seed + 1, first_item, last_item, tf.int64))
        negatives = tf.concat(parts, axis=0)[1:]
        wrong = (negatives == positive) | (negatives < first_item)
        shifted = (negatives - first_item + 1) % span + first_item
        shifted = tf.where(shifted == positive, (shifted - first_item + 1) % span + first_item, shifted)
        candidates = tf.concat([positive, tf.where(wrong, shifted, negatives)], axis=0)
        keep = tf.random.stateless_uniform([], example_seed + 2) >= event_feature_dropout  # event features?
        inputs = {"history": features["history"], "candidates": candidates,
                  "history_ratings": tf.where(keep, features["history_ratings"], 0),
                  "history_gaps": tf.where(keep, features["history_gaps"], 0),
                  "user_features": features["user_features"]}
        if rows.queries is not None:
            inputs["retrieval_query"] = features["retrieval_query"]
        clicks = tf.one_hot(0, tf.shape(candidates)[0])
        return inputs, {"clicks": clicks, "rating": features["rating"]}

    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds)).map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(input_context.get_per_replica_batch_size(batch_size), drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)
