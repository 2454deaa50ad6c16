"""tf.data input pipeline for sequence models.

Each user's chronological sequence becomes one training example of next-item
prediction at every position: ``history = s[:-1]``, ``labels = s[1:]``, both keeping
the most recent ``max_len`` items. Raw string ids go through the vocabulary's
``StringLookup`` inside the pipeline (unseen ids -> OOV). Examples are bucketed by
length and padded to the longest example of their batch, so no compute goes to
padding beyond what a batch needs.
"""

from __future__ import annotations

import numpy as np

from tfrec_attn.features.vocab import ItemVocabulary


def _ragged(values, dtype):
    import tensorflow as tf

    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    flat = np.concatenate(values) if len(values) else np.zeros(0)
    return tf.RaggedTensor.from_row_lengths(tf.constant(flat, dtype=dtype), lengths)


def length_buckets(max_len: int, num_buckets: int = 6) -> list[int]:
    """Geometric bucket boundaries up to ``max_len`` (e.g. 200 -> [7, 13, 26, 51, 101])."""
    bounds = sorted({int(round(max_len / 2 ** i)) + 1 for i in range(1, num_buckets)})
    return [b for b in bounds if 1 < b <= max_len]


def sequence_source(sequences, timestamps=None, ratings=None):
    """In-memory source of training sequences: a ``tf.data.Dataset`` of ``(ids,)``,
    ``(ids, timestamps)`` or ``(ids, timestamps, ratings)`` per user, ``ids`` tf.string [n]
    oldest first, ``timestamps`` tf.float64 [n], ``ratings`` tf.float32 [n] (NaN = none;
    ``ratings`` needs ``timestamps``). Sequences shorter than 2 items (nothing to predict)
    are dropped.

    The file-based source (:func:`tfrec_attn.data.tfrecord.read_sequence_files`) yields
    the same elements, so both feed :func:`training_examples`.
    """
    import tensorflow as tf

    keep_rows = [i for i, s in enumerate(sequences) if len(s) >= 2]
    if not keep_rows:
        raise ValueError("no sequence has 2 or more items; nothing to train on")
    if ratings is not None and timestamps is None:
        raise ValueError("a source with ratings also carries the timestamps")
    columns = (_ragged([np.asarray(sequences[i], dtype=object) for i in keep_rows], tf.string),)
    if timestamps is not None:
        columns += (_ragged([np.asarray(timestamps[i], np.float64) for i in keep_rows], tf.float64),)
    if ratings is not None:
        columns += (_ragged([np.asarray(ratings[i], np.float32) for i in keep_rows], tf.float32),)
    return tf.data.Dataset.from_tensor_slices(columns)


def sequence_dataset(sequences, vocabulary: ItemVocabulary, *, timestamps=None, ratings=None,
                     input_context=None, **options):
    """Training examples from in-memory sequences (see :func:`training_examples`).

    Args:
        sequences: list of sequences of raw item ids (str), oldest first, one per user.
        vocabulary: ItemVocabulary.
        timestamps: list of int sequences aligned with ``sequences`` (for ``shuffle_ties``).
        ratings: list of float sequences aligned with ``sequences``, or None: with them the
            examples also carry ``history_ratings`` (a rating-aware user tower).
        input_context: tf.distribute.InputContext or None. This input pipeline keeps every
            ``num_input_pipelines``-th user (DATA sharding: each worker holds the whole
            list in memory and reads its share) and batches at the per-replica size.
        **options: as :func:`training_examples`.
    """
    import tensorflow as tf

    if timestamps is None and (options.get("shuffle_ties") or ratings is not None):
        needs = "shuffle_ties needs" if options.get("shuffle_ties") else "a source with ratings needs"
        raise ValueError(f"{needs} the timestamps of the sequences")
    source = sequence_source(sequences, timestamps if options.get("shuffle_ties") or ratings is not None else None,
                             ratings)
    if input_context is not None and input_context.num_input_pipelines > 1:
        source = source.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    data_options = tf.data.Options()
    data_options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    source = source.with_options(data_options)
    options.setdefault("shuffle_buffer", max(1, sum(len(s) >= 2 for s in sequences)))  # every user
    return training_examples(source, vocabulary, input_context=input_context, **options)


def training_examples(
    source,
    vocabulary: ItemVocabulary,
    *,
    max_len: int,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    bucket_by_length: bool = True,
    pad_to_bucket_boundary: bool = False,
    repeat: bool = False,
    future_window: int = 1,
    shuffle_ties: bool = False,
    older_windows: bool = False,
    shuffle_buffer: int | None = None,
    rating_dropout: float = 0.0,
    input_context=None,
):
    """Builds the training ``tf.data.Dataset`` of ``({"history": int64 [b, L]}, labels [b, L])``
    (with a ratings column in the source, features also hold ``history_ratings`` float32
    [b, L], the history events' ratings, 0 at padding).

    Args:
        source: tf.data.Dataset of ``(ids,)``, ``(ids, timestamps)`` or ``(ids, timestamps,
            ratings)`` per user (already sharded for this input pipeline), e.g. from
            :func:`sequence_source`.
        vocabulary: ItemVocabulary. Its ``StringLookup`` maps ids to model indices.
        max_len: int. Most recent positions kept per example.
        batch_size: int. Global batch size (divided by replicas under ``input_context``).
        shuffle: bool. Reshuffle users every epoch.
        bucket_by_length: bool. Group examples of similar length into batches.
        pad_to_bucket_boundary: bool. Pad to the bucket's upper bound instead of the batch's
            longest example: a handful of distinct shapes (what XLA wants) for a little padding.
        future_window: int. With w > 1 labels are [b, L, w]: the next w items after each
            position (0 past the end of the sequence).
        shuffle_ties: bool. Re-draw, every epoch, the order of items that share a timestamp
            (needs a source with timestamps): logs record bursts (half of MovieLens'
            consecutive ratings share their second), so their order within a burst carries
            no signal and should not be learned.
        older_windows: bool. A history longer than ``max_len`` also yields its older,
            non-overlapping windows as examples, so every interaction is a target once
            (without it only the newest ``max_len`` targets of a user are trained on).
        shuffle_buffer: int. Users in the shuffle buffer (default: the whole source when its
            size is known, else 10,000).
        rating_dropout: float. With ratings, the share of examples whose ratings are all
            hidden (0 = unknown), so that the model also serves requests that carry none.
        input_context: tf.distribute.InputContext or None. Per-replica batch size.

    Returns:
        tf.data.Dataset. Padding index is 0 in both history and labels.
    """
    import tensorflow as tf

    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    lookup = vocabulary.lookup_layer()
    with_times = len(source.element_spec) >= 2
    if shuffle_ties and not with_times:
        raise ValueError("shuffle_ties needs a source with timestamps")
    ds = source
    if shuffle:
        size = tf.get_static_value(ds.cardinality())  # None inside a tf.function
        buffer = shuffle_buffer or (int(size) if size is not None and size > 0 else 10_000)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def ordered_events(seq, times=None, ratings=None):
        """(model indices, ratings or None) of one user's events, oldest first."""
        if shuffle_ties and times is not None:  # a random order within each group of equal timestamps
            jitter = tf.random.uniform(tf.shape(times), 0.0, 0.5, dtype=tf.float64)
            order = tf.argsort(times + jitter, stable=True)
            seq = tf.gather(seq, order)
            ratings = None if ratings is None else tf.gather(ratings, order)
        if ratings is not None:
            ratings = tf.where(tf.math.is_finite(ratings), ratings, 0.0)  # NaN (no rating) -> 0 = unknown
        return lookup(seq), ratings

    def window(ids, ratings, end):
        """The example whose last label is ``ids[end - 1]`` (at most ``max_len`` positions)."""
        start = tf.maximum(end - 1 - max_len, 0)
        history = ids[start: end - 1]
        features = {"history": history}
        if ratings is not None:
            features["history_ratings"] = ratings[start: end - 1]
            if rating_dropout:
                hide = tf.random.uniform([], seed=seed + 2) < rating_dropout
                features["history_ratings"] = tf.where(hide, tf.zeros_like(features["history_ratings"]),
                                                       features["history_ratings"])
        if future_window == 1:
            return features, ids[start + 1: end]
        padded = tf.concat([ids, tf.zeros([future_window], ids.dtype)], 0)
        width = tf.size(history, out_type=start.dtype)
        labels = tf.stack([padded[start + j: start + j + width] for j in range(1, future_window + 1)], axis=1)
        return features, labels

    if older_windows:
        def to_examples(*columns):
            ids, ratings = ordered_events(*columns)
            n = tf.size(ids, out_type=tf.int64)
            count = (n - 2) // max_len + 1  # windows covering targets 1 .. n-1
            ends = n - tf.range(count, dtype=tf.int64) * max_len
            return tf.data.Dataset.from_tensor_slices(ends).map(lambda end: window(ids, ratings, end))

        ds = ds.flat_map(to_examples)
        if shuffle:  # windows of one user would otherwise arrive together
            ds = ds.shuffle(4 * batch_size, seed=seed + 1, reshuffle_each_iteration=True)
    else:
        ds = ds.map(lambda *columns: window(*ordered_events(*columns), tf.size(columns[0], out_type=tf.int64)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if bucket_by_length:
        bounds = length_buckets(max_len)
        if pad_to_bucket_boundary:
            bounds = bounds + [max_len + 1]
        ds = ds.bucket_by_sequence_length(
            lambda features, labels: tf.shape(labels)[0],
            bucket_boundaries=bounds,
            bucket_batch_sizes=[batch_size] * (len(bounds) + 1),
            pad_to_bucket_boundary=pad_to_bucket_boundary,
        )
    else:
        ds = ds.padded_batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def history_batch(histories, vocabulary_ids: np.ndarray, max_len: int | None = None) -> np.ndarray:
    """Right-padded string matrix of raw ids (``""`` = padding) from catalogue-index histories.

    This is the input format of the exported ``serving_default`` signature.
    """
    ids = [vocabulary_ids[np.asarray(h, dtype=np.int64)] for h in histories]
    if max_len is not None:
        ids = [h[-max_len:] for h in ids]
    width = max(1, max((len(h) for h in ids), default=1))
    out = np.full((len(ids), width), "", dtype=object)
    for row, h in enumerate(ids):
        out[row, : len(h)] = h
    return out
