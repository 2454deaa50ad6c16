"""A trained retrieval model scored over a split's whole catalogue (the full-ranking
protocol's ``score_fn``), in memory: what validation, test, the two-stage evaluation and the
cold-start protocol share."""

from __future__ import annotations

import dataclasses

import numpy as np

from tfrec_attn.data.splits import LeaveOneOutSplit
from tfrec_attn.evaluation.protocol import Evaluator
from tfrec_attn.features.vocab import ItemVocabulary

ROWS = 512  # the Evaluator's batch of users


def model_batch(histories, to_model, width: int, rows: int = 0) -> np.ndarray:
    """Right-padded model indices of each catalogue-index history's newest ``width`` items:
    int64 [max(len(histories), rows), width] (extra rows all padding)."""
    batch = np.zeros((max(len(histories), rows), width), np.int64)
    for row, h in enumerate(histories):
        h = to_model[np.asarray(h, np.int64)][-width:]
        batch[row, : len(h)] = h
    return batch


def rating_batch(split: LeaveOneOutSplit, users, histories, width: int, rows: int = 0) -> np.ndarray:
    """The ratings of each history's events, aligned with :func:`model_batch` of the same
    histories: float32 [max(len(histories), rows), width], 0 = unknown. A history is read as
    its user's events when it is a prefix of the user's sequence in ``split`` (what the
    protocol gives at every stage); any other history's ratings are unknown."""
    batch = np.zeros((max(len(histories), rows), width), np.float32)
    for row, (user, h) in enumerate(zip(users, histories)):
        h = np.asarray(h, np.int64)
        if not np.array_equal(split.sequences[user][: len(h)], h):
            continue
        values = np.nan_to_num(np.asarray(split.ratings[user][: len(h)], np.float32), nan=0.0)[-width:]
        batch[row, : len(values)] = values
    return batch


def query_vectors(model, histories, to_model=None, rows: int = 256) -> np.ndarray:
    """float32 [n, K, d]: a retrieval model's query vectors (K = 1 for a one-vector user tower)
    for ``histories``: catalogue-index histories mapped by ``to_model``, or (``to_model``
    None) an int64 [n, H] array of model indices. Batches of fixed shape (one trace)."""
    import tensorflow as tf

    if to_model is None:
        histories = np.asarray(histories, np.int64)
    out = []
    for start in range(0, len(histories), rows):
        chunk = histories[start:start + rows]
        if to_model is None:
            batch = np.zeros((rows, chunk.shape[1]), np.int64)
            batch[:len(chunk)] = chunk
        else:
            batch = model_batch(chunk, to_model, model.max_len, rows)
        queries = np.asarray(tf.cast(model(tf.constant(batch), training=False), tf.float32))[:len(chunk)]
        out.append(queries[:, np.newaxis] if queries.ndim == 2 else queries)
    return np.concatenate(out) if out else np.zeros((0, 1, 1), np.float32)


def catalogue_scorer(model, vocabulary: ItemVocabulary, split: LeaveOneOutSplit, pad_width: int | None = None,
                     item_features=None, item_texts=None):
    """``score_fn`` for :class:`Evaluator` from a retrieval model: scores over the split's
    catalogue, in split order.

    Items outside the model's vocabulary (never seen in training) are scored like the
    export scores new items: from their text features with a text or hybrid item tower,
    as the OOV item with an id tower (all tied).

    Args:
        model: SequentialRetrievalModel.
        vocabulary: ItemVocabulary. The model's.
        split: LeaveOneOutSplit. Whose catalogue and histories are scored.
        pad_width: int. Histories are cut to their newest ``pad_width`` items before
            transfer (the model keeps its newest ``max_len`` anyway).
        item_features: float [split.num_items, text_dim] text features of the split's
            catalogue (text towers; rows of unknown items are used).
        item_texts: list of str [split.num_items]. A fine-tuned text tower encodes the
            unknown items' texts with its own encoder instead.
    """
    import tensorflow as tf

    to_model = vocabulary.model_indices(split.item_vocab)  # split catalogue -> model index
    known = vocabulary.is_item(to_model)
    unknown = np.flatnonzero(~known)
    reads_text = model.item_tower.reads_text
    # Always a tensor (empty without unknown items): one trace of score_items per model.
    extra = tf.zeros([0, model.item_embeddings().shape[-1]], tf.float32)
    if len(unknown):
        if reads_text and item_features is None and item_texts is None:
            raise ValueError(f"{len(unknown)} catalogue items are unknown to the model; a text item tower "
                             "scores them from their text, so pass item_features")
        if getattr(model.item_tower, "encoder_model", None) is not None and item_texts is not None:
            from tfrec_attn.text.encoder import encode_texts

            features = encode_texts(model.item_tower.encoder_model, [item_texts[i] for i in unknown])
        else:
            features = item_features[unknown] if reads_text else np.zeros((len(unknown), 0), np.float32)
        extra = tf.constant(model.new_item_vectors(tf.constant(features, tf.float32)))
    table = np.where(known, vocabulary.table_rows(to_model), 0)
    table[unknown] = vocabulary.num_indices - 2 + np.arange(len(unknown))  # the extra columns
    columns = tf.constant(table)
    width = pad_width or model.max_len

    rated = getattr(model, "num_ratings", 0) > 0

    def score(users, histories):
        # One shape per model (rows padded to a full evaluation batch, columns to `width`), so
        # score_items traces once per model, not once per batch shape.
        batch = tf.constant(model_batch(histories, to_model, width, rows=ROWS))
        if rated:  # a rating-aware tower reads the events' ratings too
            scores = model.score_items(batch, extra, tf.constant(rating_batch(split, users, histories, width, ROWS)))
        else:
            scores = model.score_items(batch, extra)
        return tf.gather(scores[: len(histories)], columns, axis=1).numpy()

    return score


def evaluate_model(model, vocabulary: ItemVocabulary, split: LeaveOneOutSplit, stage: str,
                   sampled: bool = True, item_features=None, users=None, item_texts=None) -> dict:
    """The full-ranking protocol's metrics of an in-memory retrieval model (``users``:
    a subset of ``split.evaluated``, default all)."""
    scorer = catalogue_scorer(model, vocabulary, split, item_features=item_features, item_texts=item_texts)
    return Evaluator(split, stage, users=users).evaluate(scorer, sampled=sampled)



@dataclasses.dataclass
class Retriever:
    """A trained retrieval model and what scoring its catalogue needs.

    Attributes:
        model: SequentialRetrievalModel.
        vocabulary: ItemVocabulary. The model's.
        item_features: float [num_items, text_dim] or None. Text features of the split's
            catalogue (text and hybrid towers score unknown items from them).
        item_texts: list of str or None.
    """

    model: object
    vocabulary: object
    item_features: np.ndarray | None = None
    item_texts: list | None = None

    def scorer(self, split):
        return catalogue_scorer(self.model, self.vocabulary, split, item_features=self.item_features,
                                item_texts=self.item_texts)
