"""What the frozen retrieval model says about the ranking recipe's training rows: per
training event, its query vectors for the history before it (the ranker's
``retrieval_query`` input) and its top items there, history and positive excluded (the hard
negatives).

The queries are the served ones: the retrieval model run on each row's history as serving
would send it (every event before the row's), not the outputs of one pass over the whole
sequence, which differ (the user tower's positions count back from the newest item)."""

from __future__ import annotations

import numpy as np

SCORE_ROWS = 512  # rows scored against the catalogue at once


def row_histories(split, rows, include_validation: bool) -> list:
    """Per row of ``rows`` (grouped by user, oldest event first: :func:`sequence_event_rows`),
    the catalogue-index history before its event: all of the user's earlier training events."""
    seqs = split.train_part("sequences", include_validation)
    histories = []
    starts = np.flatnonzero(np.r_[True, rows.users[1:] != rows.users[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(rows)]):
        seq = seqs[rows.users[start]]
        histories += [seq[:t] for t in range(len(seq) - (end - start), len(seq))]
    return histories


def retrieval_row_queries(retriever, split, rows, include_validation: bool) -> np.ndarray:
    """float32 [len(rows), K, d]: the retrieval model's query vectors for each row's history
    (K = 1 for a one-vector user tower)."""
    from tfrec_attn.evaluation.retrieval import query_vectors

    return query_vectors(retriever.model, row_histories(split, rows, include_validation),
                         retriever.vocabulary.model_indices(split.item_vocab))


def hard_negative_pool(retriever, split, rows, ranker_vocabulary, pool_size: int, include_validation: bool,
                       queries: np.ndarray | None = None):
    """Per row of ``rows``, the retrieval model's top ``pool_size`` items for the row's
    history, as the ranker's model indices (0 = none), the history and the positive excluded.

    Args:
        retriever: :class:`~tfrec_attn.evaluation.retrieval.Retriever` (trained without the
            targets it mines for: the selection checkpoint).
        split: LeaveOneOutSplit. Whose training part the rows come from.
        rows: :class:`~tfrec_attn.data.ranking_rows.EventRows`.
        ranker_vocabulary: ItemVocabulary. The ranker's (its model indices are returned).
        pool_size: int. Capped by the catalogue (a slot of a seen item stays 0).
        include_validation: bool. Rows of the train + validation part.
        queries: :func:`retrieval_row_queries` of the rows, when the caller has them.
    """
    vocabulary = retriever.vocabulary
    pool_size = min(pool_size, len(vocabulary) - 1)
    to_ranker = ranker_vocabulary.model_indices(vocabulary.item_ids)  # retrieval table row -> ranker index
    to_retrieval = vocabulary.model_indices(split.item_vocab)
    if queries is None:
        queries = retrieval_row_queries(retriever, split, rows, include_validation)
    histories = row_histories(split, rows, include_validation)
    seqs = split.train_part("sequences", include_validation)
    table = np.asarray(retriever.model.item_embeddings(), np.float32)
    out = np.zeros((len(rows), max(pool_size, 1)), np.int64)
    for lo in range(0, len(rows), SCORE_ROWS):
        scores = np.einsum("nkd,vd->nkv", queries[lo:lo + SCORE_ROWS], table).max(axis=1)  # an item: its best interest
        for r, row_scores in enumerate(scores, start=lo):
            history = histories[r]
            seen = vocabulary.table_rows(to_retrieval[seqs[rows.users[r]][:len(history) + 1]])
            row_scores[seen[seen >= 0]] = -np.inf
            top = np.argpartition(-row_scores, pool_size)[:pool_size]
            out[r, :pool_size] = np.where(np.isfinite(row_scores[top]), to_ranker[top], 0)
    out[out < 2] = 0
    return out
