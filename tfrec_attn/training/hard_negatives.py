"""Hard negatives for the ranking recipe: per training event, the retrieval model's top
items for the history before it (history and positive excluded)."""

from __future__ import annotations

import numpy as np

RETRIEVAL_BATCH = 64  # users per retrieval pass


def hard_negative_pool(retriever, split, rows, ranker_vocabulary, pool_size: int, include_validation: bool):
    """Per row of ``rows`` (grouped by user, oldest event first), the retrieval model's top
    ``pool_size`` items for the row's history, as the ranker's model indices (0 = none).

    One retrieval pass per user reads the newest ``max_len`` items before the user's last
    training event; its query after position ``t - 1`` (:meth:`position_queries`) scores the
    catalogue for the row whose history is ``seq[:t]``, exactly as training predicts there.

    Args:
        retriever: :class:`~tfrec_attn.evaluation.retrieval.Retriever` (trained without the
            targets it mines for: the selection checkpoint).
        split: LeaveOneOutSplit. Whose training part the rows come from.
        rows: :class:`~tfrec_attn.data.ranking_rows.EventRows`.
        ranker_vocabulary: ItemVocabulary. The ranker's (its model indices are returned).
        pool_size: int. Capped by the catalogue (a slot of a seen item stays 0).
        include_validation: bool. Rows of the train + validation part.
    """
    import tensorflow as tf

    model, vocabulary = retriever.model, retriever.vocabulary
    pool_size = min(pool_size, len(vocabulary) - 1)
    to_ranker = ranker_vocabulary.model_indices(vocabulary.item_ids)  # retrieval table row -> ranker index
    to_retrieval = vocabulary.model_indices(split.item_vocab)  # catalogue -> retrieval index
    seqs = split.train_part("sequences", include_validation)
    out = np.zeros((len(rows), max(pool_size, 1)), np.int64)
    starts = np.flatnonzero(np.r_[True, rows.users[1:] != rows.users[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    width = model.max_len
    table = tf.cast(model.item_embeddings(), tf.float32)
    for lo in range(0, len(starts), RETRIEVAL_BATCH):
        group = list(zip(starts[lo:lo + RETRIEVAL_BATCH], ends[lo:lo + RETRIEVAL_BATCH]))
        batch = np.zeros((len(group), width), np.int64)
        offsets = []
        users = [to_retrieval[seqs[rows.users[s]]] for s, _ in group]  # retrieval indices
        for b, seq in enumerate(users):
            window = seq[max(0, len(seq) - 1 - width):len(seq) - 1]
            batch[b, :len(window)] = window
            offsets.append(len(seq) - 1 - len(window))  # sequence index of window[0]
        queries = tf.cast(model.position_queries(tf.constant(batch)), tf.float32)
        if queries.shape.rank == 4:  # [b, w, K, d]: several interests, an item scores the max
            scores = tf.reduce_max(tf.einsum("bwkd,vd->bwkv", queries, table), axis=2).numpy()
        else:
            scores = tf.einsum("bwd,vd->bwv", queries, table).numpy()
        for b, ((s, e), seq) in enumerate(zip(group, users)):
            first = len(seq) - (e - s)
            for r, t in enumerate(range(first, len(seq))):
                # History = seq[:t]; the query after seq[t - 1] sits at window index t - 1 - offset.
                position = max(t - 1 - offsets[b], 0)
                row_scores = scores[b, position].copy()
                seen = vocabulary.table_rows(seq[:t + 1])
                row_scores[seen[seen >= 0]] = -np.inf
                top = np.argpartition(-row_scores, pool_size)[:pool_size]
                out[s + r, :pool_size] = np.where(np.isfinite(row_scores[top]), to_ranker[top], 0)
    out[out < 2] = 0
    return out
