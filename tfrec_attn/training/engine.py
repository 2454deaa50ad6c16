"""The training engine: one Keras trainer for every recipe, under any ``tf.distribute`` strategy.

The chief writes the run directory (:class:`~tfrec_attn.training.run_dir.RunDirectory`:
config, model config, vocabularies, checkpoints, history, curves, metrics), which holds
everything needed to rebuild, evaluate and export the model.

``Trainer.run`` = :meth:`Trainer.select` (fit with early stopping on the recipe's
selection metric) -> :meth:`Trainer.refit` (optional: train + validation for the selected
number of epochs) -> :meth:`Trainer.report` (test metrics, files). Each stands alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time

from tfrec_attn.config import ConfigError
from tfrec_attn.training import distribute
from tfrec_attn.training.run_dir import RunDirectory, TrainResult

logger = logging.getLogger(__name__)


class _QuietKeras(logging.Filter):
    """Drops Keras notes that the engine causes by design: the "callback is slow" note (step
    backups and the clock cost a few ms on the first batches), and, with
    ``train.eval_every > 1``, the "metric ... is not available" notes of the epochs that are
    not evaluated (EarlyStopping and ModelCheckpoint skip those epochs, as intended); and TF's
    "triggered tf.function retracing" note, which counts the traces of one method over every
    model instance: a process that trains several models (an ensemble's parts, the main job's
    cold-start retraining) traces each model's step and scorer once, by design (each model's
    scorer keeps one shape: :func:`tfrec_attn.evaluation.retrieval.catalogue_scorer`)."""

    def filter(self, record):
        message = record.getMessage()
        return not ("is slow compared to the batch time" in message
                    or ("val_" in message and "not available" in message)
                    or "triggered tf.function retracing" in message)


logging.getLogger("tensorflow").addFilter(_QuietKeras())


def has_backup(backup_dir: str) -> bool:
    """BackupAndRestore leaves checkpoint files only when a run did not finish."""
    return any(files for _, _, files in os.walk(backup_dir))


def backup_position(backup_dir: str) -> dict | None:
    """``{"epoch": e, "step": s}`` (1-based epoch, steps done in it) that BackupAndRestore
    will resume from, or None when there is no backup."""
    import tensorflow as tf

    tasks = sorted(os.listdir(backup_dir)) if os.path.isdir(backup_dir) else []
    for task in sorted(tasks, key=lambda name: name != "chief"):
        path = tf.train.latest_checkpoint(os.path.join(backup_dir, task))
        if path:
            reader = tf.train.load_checkpoint(path)
            names = reader.get_variable_to_shape_map()
            epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
            step = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE")) \
                if "ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE" in names else -1
            # A step backup inside epoch e (0-based) resumes there; an epoch-end one, after it.
            return {"epoch": epoch + 1, "step": step + 1} if step >= 0 else {"epoch": epoch + 2, "step": 0}
    return None


@dataclasses.dataclass
class SelectionResult:
    model: object
    best: dict  # the epoch log row of the selected epoch ({} when never validated)
    epochs: int  # epochs in the log (resumed ones included)
    seconds: float
    budget_hit: bool
    resumed_after_epoch: int | None
    resumed_at: dict | None = None  # {"epoch", "step"} of the backup a resumed run started from

    @property
    def best_epoch(self) -> int | None:
        return int(self.best["epoch"]) + 1 if self.best else None


def read_history(path: str) -> list[dict]:
    """Rows of a CSVLogger file as floats, one per epoch (``epoch`` is 0-based, as Keras
    writes it). An epoch logged twice (a crash between the log and the backup, then a
    resume that redid it) keeps its last row."""
    import csv

    if not os.path.isfile(path):
        return []
    with open(path, newline="") as handle:
        rows = [{k: float(v) for k, v in row.items() if v not in (None, "", "NA")}
                for row in csv.DictReader(handle)]
    by_epoch = {row.get("epoch"): row for row in rows}
    return [by_epoch[e] for e in sorted(by_epoch, key=lambda e: -1 if e is None else e)]


def epoch_log(path: str, columns):
    """A CSVLogger whose columns include ``columns`` from the first epoch on (Keras' own
    fixes them at the first row, which misses the metrics of ``eval_every > 1``)."""
    import tensorflow as tf

    class EpochLog(tf.keras.callbacks.CSVLogger):
        def on_epoch_end(self, epoch, logs=None):
            if self.keys is None:
                existing = []
                if self.append and os.path.isfile(self.filename) and os.path.getsize(self.filename):
                    with open(self.filename, newline="") as handle:
                        existing = handle.readline().strip().split(",")[1:]  # a resumed run's columns
                self.keys = existing or sorted(set(logs or {}) | set(columns))
            super().on_epoch_end(epoch, logs)

    return EpochLog(path, append=True)


class Trainer:
    """Trains one recipe.

    Args:
        recipe: :class:`tfrec_attn.training.recipe.Recipe`.
        config: the run config (``seed``, ``train`` section, and what the recipe reads).
        output_dir: str. Run directory (created; an interrupted run here resumes).
        strategy: tf.distribute.Strategy or None (from ``train.strategy``).
        verbose: int. Keras progress bar verbosity.
        track_test: bool. Also log test metrics every epoch (reporting curves only;
            selection always uses validation).
    """

    def __init__(self, recipe, config, output_dir: str, *, strategy=None, verbose: int = 1,
                 track_test: bool = False):
        from tfrec_attn.training.cluster import parse_tf_config

        self.recipe = recipe
        self.config = config
        self.train = config.train
        self.output_dir = output_dir
        self.run_dir = RunDirectory(output_dir)
        self.verbose = verbose
        self.track_test = track_test
        self.tf_config = parse_tf_config() if strategy is None and self.train.strategy in (
            "multi_worker_mirrored", "parameter_server") else None
        # Armed before the strategy exists: a multi-worker task can hang from its first collective.
        self.watchdog = distribute.PeerWatchdog(self.tf_config, self.train.peer_timeout_seconds).__enter__()
        self.strategy = strategy or distribute.make_strategy(
            self.train.strategy, tf_config=self.tf_config)
        self.chief = distribute.is_chief(self.strategy)
        self.parameter_server = distribute.is_parameter_server(self.strategy)
        # The replicas that split one global batch (a parameter-server worker takes whole ones).
        self.replicas = 1 if self.parameter_server else self.strategy.num_replicas_in_sync
        if self.train.batch_size % self.replicas:
            raise ConfigError(f"{config.origin('train.batch_size')}: train.batch_size={self.train.batch_size} "
                              f"must be divisible by the {self.replicas} replicas of train.strategy="
                              f"{self.train.strategy} (it is the global batch)")
        self.per_replica_batch = self.train.batch_size // self.replicas
        self.learning_rate = config.learning_rate()
        self.work_dir = output_dir if self.chief else None
        self._prepared = False

    # -- set-up ---------------------------------------------------------------------------
    def describe(self) -> str:
        name = type(self.strategy).__name__
        if name == "_DefaultDistributionStrategy":
            import tensorflow as tf

            name = "one device (" + ("GPU:0" if tf.config.list_physical_devices("GPU") else "CPU") + ")"
        return (f"strategy {name} (train.strategy={self.train.strategy}), {self.replicas} replica(s) in sync; "
                f"global batch {self.train.batch_size} = {self.per_replica_batch} per replica; "
                f"learning rate {self.learning_rate:g} (train.learning_rate {self.train.learning_rate:g}, "
                f"scaling {self.train.learning_rate_scaling}, schedule {self.train.learning_rate_schedule}"
                + (f", {self.train.warmup_epochs:g} warm-up epochs" if self.train.warmup_epochs else "") + ")")

    def prepare(self) -> None:
        """The run directory (chief) or a temporary one (other workers), and the recipe's data."""
        if self._prepared:
            return
        self.work_dir = distribute.task_dir(self.output_dir, self.strategy)
        os.makedirs(self.work_dir, exist_ok=True)
        self._check_resume()
        if self.chief:
            self.run_dir.save_config(self.config)
        self.recipe.prepare(self.run_dir if self.chief else None)
        self._prepared = True
        logger.info("%s", self.describe())
        if self.verbose:
            print(self.describe(), flush=True)

    @property
    def backup_dir(self) -> str:
        """One backup directory for every task: Keras restores every worker from its "chief" copy."""
        return self.run_dir.backup_dir

    def _check_resume(self) -> None:
        """An interrupted run resumes only with the model it was training: a backup restored
        into another architecture would fail deep inside TensorFlow (or silently mislead)."""
        import yaml

        backup = self.backup_dir
        saved_path = self.run_dir.config_file
        if not has_backup(backup) or not os.path.isfile(saved_path):
            return
        with open(saved_path, encoding="utf-8") as handle:
            saved = yaml.safe_load(handle) or {}
        current = dataclasses.asdict(self.config)

        def flat(tree, prefix=""):
            for key, value in tree.items():
                path = f"{prefix}{key}"
                if isinstance(value, dict):
                    yield from flat(value, path + ".")
                else:
                    yield path, value

        before, now = dict(flat(saved)), dict(flat(current))
        fixed = ("seed", "data.", "model.", "loss.", "train.batch_size", "train.strategy")
        changed = [k for k in sorted(set(before) | set(now))
                   if k.startswith(fixed) and before.get(k) != now.get(k)]
        if changed:
            detail = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
            raise ConfigError(f"{self.output_dir} holds an interrupted run with another config ({detail}); "
                              f"rerun with its config ({saved_path}) to resume, or delete {backup} to start afresh")

    def learning_rate_schedule(self, include_validation: bool = False):
        """``train.learning_rate`` (scaled for the global batch), or its warm-up / cosine
        schedule over optimizer steps. The curve is laid out over ``train.epochs`` epochs of
        this stage's length, so a refit for the chosen N epochs follows the selection run's
        curve up to epoch N."""
        import tensorflow as tf

        train = self.train
        steps = self.steps_per_epoch(include_validation)
        warmup = int(round(train.warmup_epochs * steps))
        if train.learning_rate_schedule == "constant" and not warmup:
            return self.learning_rate
        if train.learning_rate_schedule == "cosine":
            return tf.keras.optimizers.schedules.CosineDecay(
                0.0 if warmup else self.learning_rate, max(1, train.epochs * steps - warmup),
                warmup_target=self.learning_rate if warmup else None, warmup_steps=warmup)
        from tfrec_attn.training.schedules import LinearWarmup

        return LinearWarmup(self.learning_rate, warmup)

    def _optimizer(self, include_validation: bool = False):
        import tensorflow as tf

        kwargs = {"learning_rate": self.learning_rate_schedule(include_validation)}
        if self.train.clipnorm:
            kwargs["clipnorm"] = self.train.clipnorm
        if self.train.weight_averaging:
            kwargs.update(use_ema=True, ema_momentum=self.train.weight_averaging)
        if self.train.weight_decay:
            return tf.keras.optimizers.AdamW(weight_decay=self.train.weight_decay, **kwargs)
        return tf.keras.optimizers.Adam(**kwargs)

    def new_model(self, include_validation: bool = False):
        """A new, compiled model from the seed (selection and refit start alike; a refit
        trains on the validation targets too: ``include_validation``)."""
        import tensorflow as tf

        self.prepare()
        tf.keras.utils.set_random_seed(self.config.seed)
        if self.train.mixed_precision:
            tf.keras.mixed_precision.set_global_policy(
                "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16")
        try:
            with self.strategy.scope():
                model = self.recipe.build_model(static_shapes=self.train.jit_compile)
                optimizer = self._optimizer(include_validation)
                if tf.keras.mixed_precision.global_policy().name == "mixed_float16":
                    optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
                model.compile(optimizer=optimizer, jit_compile=self.train.jit_compile,
                              steps_per_execution=self.train.steps_per_execution)
        finally:
            tf.keras.mixed_precision.set_global_policy("float32")
        return model

    def backup_every_steps(self) -> int:
        """``train.backup_every_steps``, or (0) a quarter of an epoch: a crash loses at most that,
        and four saves an epoch cost a few percent (one every 50 steps cost 20% on an
        877-step epoch)."""
        return self.train.backup_every_steps or max(1, math.ceil(self.steps_per_epoch(False) / 4))

    def steps_per_epoch(self, include_validation: bool) -> int:
        return self.recipe.steps_per_epoch(self.train.batch_size, include_validation)

    def dataset(self, include_validation: bool = False):
        """What ``fit`` takes: a per-pipeline dataset function distributed by the strategy."""
        import tensorflow as tf

        def make(context):  # an endless stream; `steps_per_epoch` cuts it into epochs
            return self.recipe.dataset(context, include_validation, repeat=True)

        if self.parameter_server:
            return tf.keras.utils.experimental.DatasetCreator(make)
        if self.strategy.num_replicas_in_sync > 1 or not self.chief or self.tf_config:
            return self.strategy.distribute_datasets_from_function(make)
        return make(tf.distribute.InputContext())

    def _fit_kwargs(self, include_validation: bool) -> dict:
        # Epochs of a known number of steps: what lets a step backup resume mid-epoch, and
        # what parameter-server training requires. Every batch of the stream is full.
        return {"steps_per_epoch": self.steps_per_epoch(include_validation)}

    # -- stages -----------------------------------------------------------------------------
    def select(self) -> SelectionResult:
        """Fits with early stopping on the recipe's selection metric; returns the best epoch's model."""
        import tensorflow as tf

        from tfrec_attn.training.callbacks import (
            SelectionMetrics,
            StepWallClock,
            SwapEMAWeights,
            WallClock,
        )

        model = self.new_model()
        recipe, train = self.recipe, self.train
        work = RunDirectory(self.work_dir)  # a non-chief worker's own copy
        best_path = work.checkpoint("best")
        history_csv = work.history_file
        backup_dir = self.backup_dir
        resuming = has_backup(backup_dir)
        if not resuming and self.chief:  # a fresh run: forget a previous finished run's log and checkpoints
            for stale in (history_csv, work.checkpoints_dir):
                if os.path.isdir(stale):
                    shutil.rmtree(stale)
                elif os.path.exists(stale):
                    os.remove(stale)
        previous = read_history(history_csv) if resuming else []
        metric = recipe.selection_metric
        scored = [row[metric] for row in previous if metric in row]
        best_before = (max if recipe.selection_mode == "max" else min)(scored) if scored else None
        single = not self.tf_config and not self.parameter_server
        clock = (StepWallClock if single else WallClock)(train.time_budget_seconds, strategy=self.strategy)
        resumed_at = backup_position(backup_dir) if resuming else None
        if resuming:
            where = f"epoch {resumed_at['epoch']}, step {resumed_at['step']}" if resumed_at else \
                f"after epoch {len(previous)}"
            logger.info("resuming %s at %s", self.output_dir, where)
            if self.chief:
                print(f"resuming the interrupted run in {self.output_dir} at {where}", flush=True)
            clock.offset = previous[-1].get("elapsed", 0.0) if previous else 0.0
        callbacks = [clock]
        if self.tf_config:
            callbacks.append(distribute.first_step_callback(self.watchdog, per_batch=not self.parameter_server))
        ema = SwapEMAWeights() if train.weight_averaging else None
        if ema:
            callbacks.append(ema)
        callbacks.append(SelectionMetrics(lambda: recipe.validation_metrics(model), recipe.metric_names,
                                          train.eval_every, self.strategy))
        if self.track_test:
            callbacks.append(SelectionMetrics(lambda: recipe.tracking_metrics(model),
                                              [n.replace("val_", "test_", 1) for n in recipe.metric_names],
                                              train.eval_every, self.strategy))
        callbacks.append(
            # After a crash, only a better epoch than any before it may replace the checkpoint.
            tf.keras.callbacks.ModelCheckpoint(best_path, monitor=metric, mode=recipe.selection_mode,
                                               save_best_only=True, save_weights_only=True,
                                               initial_value_threshold=best_before))
        if ema:
            callbacks.append(ema.swap_back)
        callbacks += [
            tf.keras.callbacks.EarlyStopping(monitor=metric, mode=recipe.selection_mode, patience=train.patience),
            epoch_log(history_csv, ["loss", "elapsed", *recipe.metric_names] + (
                [n.replace("val_", "test_", 1) for n in recipe.metric_names] if self.track_test else [])),
            tf.keras.callbacks.TensorBoard(work.tensorboard_dir, write_graph=False,
                                           profile_batch=0),
        ]
        if not self.parameter_server:  # Keras' BackupAndRestore does not support it
            callbacks.append(tf.keras.callbacks.BackupAndRestore(
                backup_dir, save_freq=self.backup_every_steps(), delete_checkpoint=True))
        start = time.perf_counter()
        with self.watchdog:
            model.fit(self.dataset(), epochs=train.epochs, callbacks=callbacks, verbose=self.verbose,
                      **self._fit_kwargs(False))
        seconds = time.perf_counter() - start
        if self.chief:
            shutil.rmtree(backup_dir, ignore_errors=True)  # finished: nothing to resume
        logged = read_history(history_csv)  # every epoch, resumed or not
        rows = [row for row in logged if metric in row]
        pick = max if recipe.selection_mode == "max" else min
        best = pick(rows, key=lambda row: row[metric]) if rows else {}
        if best:
            # Keras' ModelCheckpoint writes a non-chief's copy to a temporary path and deletes it:
            # every worker restores the chief's (a cluster's run directory is on a shared file
            # system) once the chief has written it — this collective is the barrier.
            distribute.broadcast_from_chief(self.strategy, [1.0])
            model.load_weights(self.run_dir.checkpoint("best")).expect_partial()
        return SelectionResult(model, best, len(logged), seconds, clock.budget_hit,
                               len(previous) if resuming else None, resumed_at)

    def refit(self, epochs: int):
        """A new model trained on train + validation targets for ``epochs`` epochs (the
        hyperparameters and the epoch count were chosen on validation)."""
        model = self.new_model(include_validation=True)
        model.fit(self.dataset(include_validation=True), epochs=epochs, verbose=self.verbose,
                  **self._fit_kwargs(True))
        return model

    def report(self, model, metrics: dict, evaluate_test: bool = True) -> dict:
        """Final weights, model config, test metrics, ``metrics.json`` and curves (chief)."""
        model.save_weights(RunDirectory(self.work_dir).checkpoint("final"))
        if not self.chief:
            return metrics
        run = self.run_dir
        run.save_model_config(model)
        if evaluate_test:
            metrics["test"] = self.recipe.test_metrics(model)
        with open(run.metrics_file, "w") as handle:
            json.dump(metrics, handle, indent=2)
        try:
            from tfrec_attn.training.curves import plot_training_curves

            plot_training_curves(run.history_file, run.curves_file)
        except Exception as error:  # a plot must never lose a finished run
            logger.warning("could not plot training curves: %s", error)
        return metrics

    def run(self, evaluate_test: bool = True) -> TrainResult:
        """select -> refit (``train.refit_with_validation``) -> report."""
        selection = self.select()
        examples = self.recipe.num_examples()
        epochs_run = selection.epochs - (selection.resumed_after_epoch or 0)
        metrics = {
            "best_epoch": selection.best_epoch,
            "validation": {k: selection.best[k] for k in self.recipe.metric_names if k in selection.best},
            "resumed_after_epoch": selection.resumed_after_epoch,
            "resumed_at": selection.resumed_at,
            "epochs": selection.epochs,
            "train_seconds": selection.seconds,
            "budget_hit": selection.budget_hit,
            "sequences_per_second": epochs_run * examples / max(selection.seconds, 1e-9),
            "strategy": self.train.strategy,
            "replicas": self.replicas,
            "global_batch_size": self.train.batch_size,
            "per_replica_batch_size": self.per_replica_batch,
            "learning_rate": self.learning_rate,
        }
        if hasattr(self.recipe, "positions_per_epoch"):
            metrics["positions_per_epoch"] = int(self.recipe.positions_per_epoch())
        model = selection.model
        if self.train.refit_with_validation and selection.best:
            began = time.perf_counter()
            model = self.refit(selection.best_epoch)
            metrics["refit_seconds"] = time.perf_counter() - began
            metrics["note"] = "model refit on train + validation targets; validation metrics are the selection run's"
        if self.chief:
            self.recipe.finish(model, self.run_dir, verbose=self.verbose)
        self.report(model, metrics, evaluate_test)
        return TrainResult(model, self.config, metrics, self.output_dir, self.recipe)
