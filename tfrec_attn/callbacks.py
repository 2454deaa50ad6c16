"""Keras callbacks: full-ranking validation, wall-clock budget."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from tfrec_attn.evaluation import Evaluator

# Metric names as they appear in Keras logs (CSVLogger, TensorBoard, EarlyStopping).
LOG_NAMES = {"HR@10": "hr10", "NDCG@10": "ndcg10", "HR@50": "hr50", "MRR": "mrr"}


class FullRankingEvaluation(tf.keras.callbacks.Callback):
    """Runs the project's full-ranking protocol every ``every`` epochs.

    Adds ``{prefix}hr10``, ``{prefix}ndcg10``, ``{prefix}hr50``, ``{prefix}mrr`` to the
    epoch logs, so EarlyStopping / ModelCheckpoint / CSVLogger can use them. Put it
    before those callbacks in the list.

    Args:
        evaluator: Evaluator. E.g. ``Evaluator(split, "validation")``.
        score_fn: callable ``(users, histories) -> scores [b, num_items]``.
        every: int. Epochs between evaluations.
        prefix: str. ``val_`` for selection; ``test_`` only for reporting curves.
    """

    def __init__(self, evaluator: Evaluator, score_fn, every: int = 1, prefix: str = "val_",
                 batch_size: int = 256):
        super().__init__()
        self.evaluator = evaluator
        self.score_fn = score_fn
        self.every = every
        self.prefix = prefix
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        metrics = self.evaluator.evaluate(self.score_fn, batch_size=self.batch_size, sampled=False)
        values = {self.prefix + short: metrics[name] for name, short in LOG_NAMES.items()}
        if logs is not None:
            logs.update(values)


class WeightAveraging(tf.keras.callbacks.Callback):
    """An exponential moving average of the weights, used wherever the model is judged.

    The average is updated after every training step. At the end of each epoch the
    averaged weights are swapped in, so validation, ModelCheckpoint and the final model
    all see them; the raw weights come back before the next epoch trains. Put it before
    the validation callback.

    Args:
        decay: float. Per-step decay (0.98 with ~10 steps an epoch averages ~5 epochs).
    """

    def __init__(self, decay: float):
        super().__init__()
        self.decay = decay
        self.average = None
        self.raw = None

    def on_train_begin(self, logs=None):
        weights = self.model.trainable_weights
        self.average = [tf.Variable(w, trainable=False) for w in weights]
        self.raw = [tf.Variable(w, trainable=False) for w in weights]

    def on_train_batch_end(self, batch, logs=None):
        for average, weight in zip(self.average, self.model.trainable_weights):
            average.assign(self.decay * average + (1.0 - self.decay) * weight)

    def on_epoch_end(self, epoch, logs=None):
        for raw, average, weight in zip(self.raw, self.average, self.model.trainable_weights):
            raw.assign(weight)
            weight.assign(average)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch > 0 and self.raw is not None:
            for raw, weight in zip(self.raw, self.model.trainable_weights):
                weight.assign(raw)


class WallClock(tf.keras.callbacks.Callback):
    """Logs ``elapsed`` (seconds since training began) and stops after ``budget`` seconds.

    The budget counts all wall time of ``fit``, validation included; training stops at
    the end of the batch that crosses it (the epoch's validation still runs).
    """

    def __init__(self, budget_seconds: float = 0.0, offset: float = 0.0):
        super().__init__()
        self.budget = budget_seconds
        self.offset = offset
        self.start = None
        self.budget_hit = False

    def elapsed(self) -> float:
        return self.offset + (time.perf_counter() - self.start if self.start else 0.0)

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.budget and self.elapsed() >= self.budget:
            self.budget_hit = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["elapsed"] = self.elapsed()


def catalogue_scorer(model, catalogue_to_index: np.ndarray, pad_width: int | None = None):
    """``score_fn`` for :class:`Evaluator` from a retrieval model.

    Args:
        model: SequentialRetrievalModel.
        catalogue_to_index: int array [num_items]. Model index of each split catalogue item.
        pad_width: int. Histories are cut to their newest ``pad_width`` items before
            transfer (the model keeps its newest ``max_len`` anyway).
    """
    from tfrec_attn.features.vocab import FIRST_ITEM_INDEX

    catalogue_to_index = np.asarray(catalogue_to_index, np.int64)
    known = catalogue_to_index >= FIRST_ITEM_INDEX  # items the model has never seen rank last
    columns = tf.constant(np.where(known, catalogue_to_index - FIRST_ITEM_INDEX, 0))
    lowest = np.finfo(np.float32).min
    width = pad_width or model.max_len

    def score(users, histories):
        batch = np.zeros((len(histories), max(1, min(width, max(map(len, histories))))), np.int64)
        for row, h in enumerate(histories):
            h = catalogue_to_index[np.asarray(h, np.int64)][-width:]
            batch[row, : len(h)] = h
        scores = model.score_items(tf.constant(batch))
        scores = tf.gather(scores, columns, axis=1).numpy()
        scores[:, ~known] = lowest
        return scores

    return score
