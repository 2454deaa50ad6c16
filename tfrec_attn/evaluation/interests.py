"""What a multi-interest retrieval model's interests do, measured: collapse diagnostics
(logged every epoch), the breadth of its top-10 lists, and whether an interest's label
names the item it scores highest."""

from __future__ import annotations

import numpy as np

from tfrec_attn.data.splits import LeaveOneOutSplit

ROWS = 256


def _histories_and_targets(split: LeaveOneOutSplit, stage: str, max_users: int | None):
    """(histories, targets) in catalogue indices: the evaluated users' ``stage`` inputs and
    targets, or (``stage="train"``) each user's last training target and what precedes it."""
    if stage == "train":
        sequences = [s for s in split.train_sequences() if len(s) >= 2]
        histories, targets = [s[:-1] for s in sequences], np.array([s[-1] for s in sequences], np.int64)
    else:
        histories, targets = split.inputs(stage), split.targets(stage)
    if max_users is not None:
        histories, targets = histories[:max_users], targets[:max_users]
    return histories, targets


def interest_scores(model, vocabulary, split: LeaveOneOutSplit, histories):
    """Per-interest scores over ``split``'s catalogue, in batches of :data:`ROWS`: yields
    (start, queries [b, K, d], scores [b, K, num_items], attention [b, K, L], compact [b, L]),
    the last two what :meth:`MultiInterestRetrievalModel.interests` returns; history items
    and items the model never saw score -inf."""
    import tensorflow as tf

    from tfrec_attn.evaluation.protocol import without_history
    from tfrec_attn.evaluation.retrieval import model_batch

    to_model = vocabulary.model_indices(split.item_vocab)
    rows = vocabulary.table_rows(to_model)
    known = rows >= 0
    table = tf.cast(model.item_embeddings(), tf.float32)
    for start in range(0, len(histories), ROWS):
        chunk = histories[start:start + ROWS]
        queries, attention, compact = model.interests(tf.constant(model_batch(chunk, to_model, model.max_len)))
        queries = tf.cast(queries, tf.float32)
        scores = tf.einsum("bkd,nd->bkn", queries, table).numpy()
        out = np.full(scores.shape[:2] + (split.num_items,), -np.inf, np.float32)
        out[:, :, known] = scores[:, :, rows[known]]
        yield start, queries.numpy(), without_history(out, chunk), attention, compact


def interest_diagnostics(model, vocabulary, split: LeaveOneOutSplit, stage: str = "validation",
                         max_users: int | None = 1000, k: int = 10) -> dict:
    """Collapse diagnostics over ``stage``'s users (the first ``max_users``; ``stage="train"``:
    each user's last training target).

    Returns:
        ``interest_cosine``: mean pairwise cosine of a user's interests (1 = collapsed);
        ``interest_min_share``: the smallest share of the targets that one interest wins
        (scores highest; 1 / K when balanced, 0 when an interest is dead), and
        ``interest_shares``: every interest's share;
        ``interests_in_top10``: mean number of distinct interests that win an item of the
        top-``k`` (history excluded).
    """
    from tfrec_attn.layers.interests import aggregate_interests
    from tfrec_attn.models.multi_interest import mean_pairwise_cosine

    histories, targets = _histories_and_targets(split, stage, max_users)
    wins, cosines, in_top = np.zeros(model.num_interests), [], []
    for start, queries, scores, _, compact in interest_scores(model, vocabulary, split, histories):
        cosines.append(mean_pairwise_cosine(queries).numpy())
        target_scores = scores[np.arange(len(scores)), :, targets[start:start + len(scores)]]  # [b, K]
        seen = np.isfinite(target_scores).all(axis=1)
        np.add.at(wins, np.argmax(target_scores[seen], axis=1), 1)
        # the top-k as retrieval lists it (the model's aggregation), and the interest of each item
        merged, source = (x.numpy() for x in aggregate_interests(
            scores, model.aggregation_weights(None, queries, compact), model.aggregation))
        top = np.argpartition(-merged, k, axis=1)[:, :k]
        in_top.extend(len(np.unique(w)) for w in np.take_along_axis(source, top, axis=1))
    shares = wins / max(wins.sum(), 1)
    return {"interest_cosine": float(np.mean(np.concatenate(cosines))), "interest_min_share": float(shares.min()),
            "interests_in_top10": float(np.mean(in_top)), "interest_shares": shares.tolist()}


def list_breadth(topk: np.ndarray, item_genres: list, num_items: int) -> dict:
    """Breadth of ranked lists ``topk`` [users, k] of catalogue indices.

    Args:
        item_genres: list of tuple of str, per catalogue index.

    Returns:
        ``genres_per_list``: mean number of distinct genres (categories) in a list;
        ``coverage``: the share of the catalogue in at least one list.
    """
    genres = [len({g for i in row for g in item_genres[i]}) for row in topk]
    return {"genres_per_list": float(np.mean(genres)), "coverage": len(np.unique(topk)) / num_items}
