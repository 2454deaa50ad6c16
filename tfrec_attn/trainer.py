"""Training, reloading and evaluating the retrieval model (library side of ``train``).

A run directory holds everything needed to rebuild the model:

    OUTPUT/config.yaml              resolved configuration
    OUTPUT/vocab/items.txt          item vocabulary (model index = line + 2)
    OUTPUT/checkpoints/best*        weights with the best validation NDCG@10
    OUTPUT/checkpoints/final*       the model the run returns and exports (= best, or the
                                    refit on train + validation with train.refit_with_validation)
    OUTPUT/backup/                  BackupAndRestore state while training (resume)
    OUTPUT/history.csv              per-epoch loss, validation metrics, elapsed seconds
    OUTPUT/tensorboard/             TensorBoard logs
    OUTPUT/curves.png               training curves
    OUTPUT/metrics.json             validation (best) and test metrics, timings
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time

import numpy as np

from tfrec_attn.config import RetrievalConfig, load_config, save_config
from tfrec_attn.data.splits import LeaveOneOutSplit, leave_one_out
from tfrec_attn.evaluation import Evaluator
from tfrec_attn.features.vocab import FIRST_ITEM_INDEX, OOV_INDEX, ItemVocabulary

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    model: object
    vocabulary: ItemVocabulary
    split: LeaveOneOutSplit
    config: RetrievalConfig
    metrics: dict
    output_dir: str


def item_counts_by_index(split: LeaveOneOutSplit, vocabulary: ItemVocabulary) -> np.ndarray:
    counts = np.zeros(vocabulary.num_indices, dtype=np.float64)
    counts[catalogue_indices(split, vocabulary)] = split.train_item_counts()
    counts[:FIRST_ITEM_INDEX] = 0
    return counts


def catalogue_indices(split: LeaveOneOutSplit, vocabulary: ItemVocabulary) -> np.ndarray:
    """Model index of each split catalogue item (1 = OOV for items the model lacks)."""
    index = {item: i + FIRST_ITEM_INDEX for i, item in enumerate(vocabulary.item_ids)}
    return np.array([index.get(item, OOV_INDEX) for item in split.item_vocab], dtype=np.int64)


def build_model(config: RetrievalConfig, vocabulary: ItemVocabulary, item_counts=None):
    import tensorflow as tf

    from tfrec_attn.models import SequentialRetrievalModel

    model = SequentialRetrievalModel(vocabulary.num_indices, config.model, config.loss, item_counts,
                                     static_shapes=config.train.jit_compile)
    model(tf.zeros((1, 1), tf.int64))  # create the weights
    return model


def _optimizer(train):
    import tensorflow as tf

    kwargs = {"learning_rate": train.learning_rate}
    if train.clipnorm:
        kwargs["clipnorm"] = train.clipnorm
    if train.weight_decay:
        return tf.keras.optimizers.AdamW(weight_decay=train.weight_decay, **kwargs)
    return tf.keras.optimizers.Adam(**kwargs)


def train_retrieval(config: RetrievalConfig, dataset, output_dir: str, *, verbose: int = 1,
                    evaluate_test: bool = True, track_test: bool = False,
                    split: LeaveOneOutSplit | None = None) -> TrainResult:
    """Trains with Keras ``fit`` and the project's callbacks; returns the best model.

    Args:
        config: RetrievalConfig.
        dataset: Dataset (ignored when ``split`` is given).
        output_dir: str. Run directory (created; an interrupted run here resumes).
        verbose: int. Keras progress bar verbosity.
        evaluate_test: bool. Evaluate the best model on the test split at the end.
        track_test: bool. Also log test metrics every epoch (reporting curves only;
            selection always uses validation).
    """
    import tensorflow as tf

    from tfrec_attn.callbacks import (
        FullRankingEvaluation,
        WallClock,
        WeightAveraging,
        catalogue_scorer,
    )
    from tfrec_attn.data.pipeline import sequence_dataset

    os.makedirs(output_dir, exist_ok=True)
    save_config(config, os.path.join(output_dir, "config.yaml"))
    split = split or leave_one_out(dataset.interactions, config.data.min_interactions)
    vocabulary = ItemVocabulary(split.item_vocab)
    vocabulary.save(os.path.join(output_dir, "vocab", "items.txt"))
    counts = item_counts_by_index(split, vocabulary)

    def fresh_model():
        """A new, compiled model from the seed (selection and refit start alike)."""
        tf.keras.utils.set_random_seed(config.seed)
        if config.train.mixed_precision:
            tf.keras.mixed_precision.set_global_policy(
                "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16")
        try:
            fresh = build_model(config, vocabulary, counts)
        finally:
            tf.keras.mixed_precision.set_global_policy("float32")
        fresh.compile(optimizer=_optimizer(config.train), jit_compile=config.train.jit_compile,
                      steps_per_execution=config.train.steps_per_execution)
        return fresh

    model = fresh_model()

    def training_data(include_validation: bool):
        return sequence_dataset(
            [split.item_vocab[s] for s in split.train_sequences(include_validation)], vocabulary,
            max_len=config.model.max_len, batch_size=config.train.batch_size, shuffle=True,
            seed=config.seed, bucket_by_length=config.train.bucket_by_length,
            pad_to_bucket_boundary=config.train.jit_compile, future_window=config.loss.future_window,
            timestamps=split.train_part("timestamps", include_validation),
            shuffle_ties=config.train.shuffle_ties, older_windows=config.train.older_windows)

    train_ds = training_data(include_validation=False)

    index_of = catalogue_indices(split, vocabulary)
    scorer = catalogue_scorer(model, index_of)
    clock = WallClock(config.train.time_budget_seconds)
    validation = FullRankingEvaluation(Evaluator(split, "validation"), scorer, config.train.eval_every)
    best_path = os.path.join(output_dir, "checkpoints", "best")
    history_csv = os.path.join(output_dir, "history.csv")
    backup_dir = os.path.join(output_dir, "backup")
    # BackupAndRestore leaves checkpoint files only when a run did not finish.
    resuming = any(files for _, _, files in os.walk(backup_dir))
    if not resuming:  # a fresh run: forget a previous finished run's log and checkpoints
        for stale in (history_csv, os.path.join(output_dir, "checkpoints")):
            if os.path.isdir(stale):
                shutil.rmtree(stale)
            elif os.path.exists(stale):
                os.remove(stale)
    previous = read_history(history_csv) if resuming else []
    best_before = max((row["val_ndcg10"] for row in previous if "val_ndcg10" in row), default=None)
    if resuming:
        logger.info("resuming %s after epoch %d", output_dir, len(previous))
        clock.offset = previous[-1]["elapsed"] if previous and "elapsed" in previous[-1] else 0.0
    callbacks = [clock]
    if config.train.weight_averaging:
        callbacks.append(WeightAveraging(config.train.weight_averaging))
    callbacks.append(validation)
    if track_test:
        callbacks.append(FullRankingEvaluation(Evaluator(split, "test"), scorer,
                                               config.train.eval_every, prefix="test_"))
    callbacks += [
        # After a crash, only a better epoch than any before it may replace the checkpoint.
        tf.keras.callbacks.ModelCheckpoint(best_path, monitor="val_ndcg10", mode="max",
                                           save_best_only=True, save_weights_only=True,
                                           initial_value_threshold=best_before),
        tf.keras.callbacks.EarlyStopping(monitor="val_ndcg10", mode="max",
                                         patience=config.train.patience),
        tf.keras.callbacks.CSVLogger(history_csv, append=True),
        tf.keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard"), write_graph=False,
                                       profile_batch=0),
        tf.keras.callbacks.BackupAndRestore(backup_dir),
    ]
    start = time.perf_counter()
    history = model.fit(train_ds, epochs=config.train.epochs, callbacks=callbacks, verbose=verbose)
    train_seconds = time.perf_counter() - start
    shutil.rmtree(backup_dir, ignore_errors=True)  # finished: nothing to resume
    logged = read_history(history_csv)  # every epoch, resumed or not
    rows = [row for row in logged if "val_ndcg10" in row]
    best = max(rows, key=lambda row: row["val_ndcg10"]) if rows else {}
    if best:
        model.load_weights(best_path).expect_partial()

    trainable = [s for s in split.train_sequences() if len(s) >= 2]
    if config.train.older_windows:  # every interaction after a user's first is a target
        positions = sum(len(s) - 1 for s in trainable)
    else:  # only the newest max_len targets of each user
        positions = sum(min(len(s) - 1, config.model.max_len) for s in trainable)
    epochs_run = len(history.history.get("loss", []))
    metrics = {
        "best_epoch": int(best["epoch"]) + 1 if best else None,
        "validation": {k: best[k] for k in ("val_hr10", "val_ndcg10", "val_hr50", "val_mrr") if k in best},
        "resumed_after_epoch": len(previous) if resuming else None,
        "epochs": len(logged) or epochs_run,
        "train_seconds": train_seconds,
        "budget_hit": clock.budget_hit,
        "sequences_per_second": epochs_run * len(trainable) / max(train_seconds, 1e-9),
        "positions_per_epoch": int(positions),
    }
    if config.train.refit_with_validation and best:
        # Hyperparameters and epoch count are chosen; now learn from every target the test
        # may see (the validation ones too), for exactly the selected number of epochs.
        refit_start = time.perf_counter()
        model = fresh_model()  # same precision policy and compile options as the selection run
        averaging = [WeightAveraging(config.train.weight_averaging)] if config.train.weight_averaging else []
        model.fit(training_data(include_validation=True), epochs=metrics["best_epoch"], callbacks=averaging,
                  verbose=verbose)
        scorer = catalogue_scorer(model, index_of)
        metrics["refit_seconds"] = time.perf_counter() - refit_start
        metrics["note"] = "model refit on train + validation targets; validation metrics are the selection run's"
    model.save_weights(os.path.join(output_dir, "checkpoints", "final"))
    if evaluate_test:
        metrics["test"] = Evaluator(split, "test").evaluate(scorer)
    with open(os.path.join(output_dir, "metrics.json"), "w") as handle:
        json.dump(metrics, handle, indent=2)
    try:
        from tfrec_attn.plots import plot_training_curves

        plot_training_curves(history_csv,
                             os.path.join(output_dir, "curves.png"))
    except Exception as error:  # a plot must never lose a finished run
        logger.warning("could not plot training curves: %s", error)
    return TrainResult(model, vocabulary, split, config, metrics, output_dir)


def read_history(path: str) -> list[dict]:
    """Rows of a CSVLogger file as floats, one per epoch (``epoch`` is 0-based, as Keras
    writes it). An epoch logged twice (a crash between the log and the backup, then a
    resume that redid it) keeps its last row."""
    import csv

    if not os.path.isfile(path):
        return []
    with open(path, newline="") as handle:
        rows = [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(handle)]
    by_epoch = {row.get("epoch"): row for row in rows}
    return [by_epoch[e] for e in sorted(by_epoch, key=lambda e: -1 if e is None else e)]


def load_run(output_dir: str):
    """Rebuilds (config, vocabulary, the run's final model) from a run directory."""
    config = load_config(os.path.join(output_dir, "config.yaml"))
    vocabulary = ItemVocabulary.load(os.path.join(output_dir, "vocab", "items.txt"))
    model = build_model(config, vocabulary)
    model.load_weights(os.path.join(output_dir, "checkpoints", "final")).expect_partial()
    return config, vocabulary, model
