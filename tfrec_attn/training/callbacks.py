"""Keras callbacks of the engine: selection metrics, the optimizer's weight average,
the wall-clock budget."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf


class SelectionMetrics(tf.keras.callbacks.Callback):
    """Adds a recipe's validation metrics to the epoch logs every ``every`` epochs.

    The chief computes them (``compute() -> {log name: value}``); under a multi-worker
    strategy they are broadcast, so every worker's EarlyStopping / ModelCheckpoint takes
    the same decision. Put it before those callbacks in the list.

    Args:
        compute: callable returning ``{name: float}`` (names as they should appear in
            the logs, e.g. ``val_ndcg10``), run on the chief only.
        names: the names ``compute`` returns, in a fixed order (what other workers receive).
        every: int. Epochs between evaluations.
        strategy: the run's ``tf.distribute.Strategy`` (None: this process is alone).
    """

    def __init__(self, compute, names, every: int = 1, strategy=None):
        super().__init__()
        self.compute = compute
        self.names = list(names)
        self.every = every
        self.strategy = strategy

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        from tfrec_attn.training import distribute

        chief = self.strategy is None or distribute.is_chief(self.strategy)
        values = self.compute() if chief else {}
        vector = np.array([values.get(name, 0.0) for name in self.names])
        if self.strategy is not None:
            vector = distribute.broadcast_from_chief(self.strategy, vector)
        if logs is not None:
            logs.update({name: float(v) for name, v in zip(self.names, vector)})


class SwapEMAWeights(tf.keras.callbacks.Callback):
    """Judges the optimizer's exponential moving average of the weights.

    With ``use_ema=True`` the optimizer keeps the average (checkpointed with it and
    mirrored like the weights). At each epoch's end this swaps the averaged values into
    the model, so validation, ModelCheckpoint and the kept model see them; its
    :attr:`swap_back` companion (put it after ModelCheckpoint) swaps the raw weights back
    for training. Keras 3 ships the same idea as ``keras.callbacks.SwapEMAWeights``.
    """

    def __init__(self):
        super().__init__()
        self.swapped = False
        owner = self

        class _SwapBack(tf.keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                owner.swap(to_average=False)

        self.swap_back = _SwapBack()

    def swap(self, to_average: bool) -> None:
        if self.swapped == to_average:
            return
        optimizer = self.model.optimizer
        averages = getattr(optimizer, "_model_variables_moving_average", None)
        if not averages:
            return
        for variable in self.model.trainable_variables:
            average = averages[optimizer._index_dict[optimizer._var_key(variable)]]
            raw = tf.identity(variable)
            variable.assign(average)
            average.assign(raw)
        self.swapped = to_average

    def on_epoch_end(self, epoch, logs=None):
        self.swap(to_average=True)


class WallClock(tf.keras.callbacks.Callback):
    """Logs ``elapsed`` (seconds since training began) and stops after ``budget`` seconds,
    at the end of the epoch that crosses it. Under a multi-process strategy the chief's
    clock decides for every task (they must stop at the same step).

    The budget counts all wall time of ``fit``, validation included. Use
    :class:`StepWallClock` to stop at the batch that crosses it (one process only:
    parameter-server training allows no batch-level callbacks).
    """

    def __init__(self, budget_seconds: float = 0.0, offset: float = 0.0, strategy=None):
        super().__init__()
        self.budget = budget_seconds
        self.offset = offset
        self.start = None
        self.budget_hit = False
        resolver = getattr(strategy, "cluster_resolver", None)
        self.strategy = strategy if resolver is not None and resolver.cluster_spec().as_dict() else None

    def elapsed(self) -> float:
        return self.offset + (time.perf_counter() - self.start if self.start else 0.0)

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.budget and not self.budget_hit:
            over = [self.elapsed() >= self.budget]
            if self.strategy is not None:
                from tfrec_attn.training.distribute import broadcast_from_chief

                over = broadcast_from_chief(self.strategy, over)
            if over[0]:
                self.budget_hit = True
                self.model.stop_training = True
        if logs is not None:
            logs["elapsed"] = self.elapsed()


class StepWallClock(WallClock):
    """:class:`WallClock` that stops at the end of the batch that crosses the budget (the
    epoch's validation still runs)."""

    def on_train_batch_end(self, batch, logs=None):
        if self.budget and self.elapsed() >= self.budget:
            self.budget_hit = True
            self.model.stop_training = True
