"""The retrieval recipe: the transformer two-tower model on leave-one-out sequences.

    >>> from tfrec_attn.training.retrieval import train_retrieval
    >>> result = train_retrieval(load_config("training/configs/ml100k_retrieval.yaml"),
    ...                          read_movielens("ml-100k"), "runs/retrieval")
"""

from __future__ import annotations

import math
import os

import numpy as np

from tfrec_attn.data.splits import LeaveOneOutSplit, leave_one_out
from tfrec_attn.evaluation import Evaluator
from tfrec_attn.features.vocab import ItemVocabulary
from tfrec_attn.training.recipe import Recipe

# Metric names as they appear in Keras logs (CSVLogger, TensorBoard, EarlyStopping).
LOG_NAMES = {"HR@10": "hr10", "NDCG@10": "ndcg10", "HR@50": "hr50", "MRR": "mrr"}


def catalogue_scorer(model, vocabulary: ItemVocabulary, split: LeaveOneOutSplit, pad_width: int | None = None):
    """``score_fn`` for :class:`Evaluator` from a retrieval model: scores over the split's
    catalogue, in split order (items the model has never seen rank last).

    Args:
        model: SequentialRetrievalModel.
        vocabulary: ItemVocabulary. The model's.
        split: LeaveOneOutSplit. Whose catalogue and histories are scored.
        pad_width: int. Histories are cut to their newest ``pad_width`` items before
            transfer (the model keeps its newest ``max_len`` anyway).
    """
    import tensorflow as tf

    to_model = vocabulary.model_indices(split.item_vocab)  # split catalogue -> model index
    known = vocabulary.is_item(to_model)
    columns = tf.constant(np.where(known, vocabulary.table_rows(to_model), 0))
    lowest = np.finfo(np.float32).min
    width = pad_width or model.max_len

    def score(users, histories):
        batch = np.zeros((len(histories), max(1, min(width, max(map(len, histories))))), np.int64)
        for row, h in enumerate(histories):
            h = to_model[np.asarray(h, np.int64)][-width:]
            batch[row, : len(h)] = h
        scores = model.score_items(tf.constant(batch))
        scores = tf.gather(scores, columns, axis=1).numpy()
        scores[:, ~known] = lowest
        return scores

    return score


def evaluate_model(model, vocabulary: ItemVocabulary, split: LeaveOneOutSplit, stage: str,
                   sampled: bool = True) -> dict:
    """The full-ranking protocol's metrics of an in-memory retrieval model."""
    return Evaluator(split, stage).evaluate(catalogue_scorer(model, vocabulary, split), sampled=sampled)


class RetrievalRecipe(Recipe):
    """Transformer two-tower retrieval, next-item softmax at every position.

    Args:
        config: RetrievalConfig.
        dataset: Dataset (ignored when ``split`` is given).
        split: LeaveOneOutSplit. The split to train, select and report on.
    """

    name = "retrieval"
    metric_names = tuple(f"val_{short}" for short in LOG_NAMES.values())
    selection_metric = "val_ndcg10"

    def __init__(self, config, dataset=None, split: LeaveOneOutSplit | None = None):
        self.config = config
        self.split = split or leave_one_out(dataset.interactions, config.data.min_interactions)
        self.vocabulary = None
        self.item_counts = None

    def prepare(self, output_dir):
        self.vocabulary = ItemVocabulary(self.split.item_vocab)
        counts = np.zeros(self.vocabulary.num_indices, np.float64)
        counts[self.vocabulary.model_indices(self.split.item_vocab)] = self.split.train_item_counts()
        self.item_counts = counts
        if output_dir:
            self.vocabulary.save(os.path.join(output_dir, "vocab", "items.txt"))

    def build_model(self, static_shapes=False):
        from tfrec_attn.models import build_retrieval_model

        return build_retrieval_model(self.config.model, self.config.loss, self.vocabulary.num_indices,
                                     item_counts=self.item_counts, seed=self.config.seed,
                                     static_shapes=static_shapes)

    def _options(self, repeat=True):
        c = self.config
        return dict(max_len=c.model.max_len, batch_size=c.train.batch_size, shuffle=True, seed=c.seed, repeat=repeat,
                    bucket_by_length=c.train.bucket_by_length, pad_to_bucket_boundary=c.train.jit_compile,
                    future_window=c.loss.future_window, shuffle_ties=c.train.shuffle_ties,
                    older_windows=c.train.older_windows)

    def dataset(self, input_context, include_validation=False, repeat=True):
        from tfrec_attn.data.sequences import sequence_dataset, training_examples

        files = self.config.data.sequence_files
        if files:  # FILE sharding: this pipeline opens only its own shards
            from tfrec_attn.data.tfrecord import read_sequence_files

            source = read_sequence_files(sequence_files_dir(files, include_validation),
                                         input_context=input_context,
                                         with_timestamps=self.config.train.shuffle_ties)
            return training_examples(source, self.vocabulary, input_context=input_context, **self._options(repeat))
        sequences = [self.split.item_vocab[s] for s in self.split.train_sequences(include_validation)]
        return sequence_dataset(sequences, self.vocabulary, input_context=input_context,
                                timestamps=self.split.train_part("timestamps", include_validation),
                                **self._options(repeat))

    def _trainable(self, include_validation=False):
        """Training sequences with something to predict (2 items or more)."""
        return [s for s in self.split.train_sequences(include_validation) if len(s) >= 2]

    def num_examples(self, include_validation=False):
        trainable = self._trainable(include_validation)
        if not self.config.train.older_windows:
            return len(trainable)
        return sum(math.ceil((len(s) - 1) / self.config.model.max_len) for s in trainable)

    def positions_per_epoch(self) -> int:
        trainable = self._trainable()
        if self.config.train.older_windows:  # every interaction after a user's first is a target
            return sum(len(s) - 1 for s in trainable)
        return sum(min(len(s) - 1, self.config.model.max_len) for s in trainable)

    def _metrics(self, model, stage, prefix):
        metrics = evaluate_model(model, self.vocabulary, self.split, stage, sampled=False)
        return {prefix + short: metrics[name] for name, short in LOG_NAMES.items()}

    def validation_metrics(self, model):
        return self._metrics(model, "validation", "val_")

    def tracking_metrics(self, model):
        return self._metrics(model, "test", "test_")

    def test_metrics(self, model):
        return evaluate_model(model, self.vocabulary, self.split, "test")

    def export(self, model, base_path, **options):
        from tfrec_attn.export import export_retrieval

        export = self.config.export
        settings = {"model_name": export.model_name, "k": export.k, "index": export.index, **options}
        return export_retrieval(model, self.vocabulary, base_path, **settings)


def sequence_files_dir(root: str, include_validation: bool) -> str:
    """``tfrec-attn data prepare --output ROOT`` writes ``ROOT/train`` and
    ``ROOT/train_validation`` (the refit's data)."""
    return os.path.join(root, "train_validation" if include_validation else "train")


def train_retrieval(config, dataset, output_dir: str, *, verbose: int = 1, evaluate_test: bool = True,
                    track_test: bool = False, split: LeaveOneOutSplit | None = None, strategy=None):
    """Trains the retrieval recipe with the engine (selection, optional refit, report).

    Returns:
        TrainResult with ``model``, ``vocabulary``, ``split``, ``metrics``.
    """
    from tfrec_attn.training.engine import Trainer

    recipe = RetrievalRecipe(config, dataset, split)
    result = Trainer(recipe, config, output_dir, verbose=verbose, track_test=track_test,
                     strategy=strategy).run(evaluate_test=evaluate_test)
    result.vocabulary = recipe.vocabulary
    result.split = recipe.split
    return result


def build_model(config, vocabulary: ItemVocabulary, item_counts=None):
    """An untrained retrieval model for ``config`` over ``vocabulary`` (weights created)."""
    from tfrec_attn.models import build_retrieval_model

    return build_retrieval_model(config.model, config.loss, vocabulary.num_indices, item_counts=item_counts,
                                 seed=config.seed, static_shapes=config.train.jit_compile)


def load_run(output_dir: str):
    """(config, vocabulary, the run's final model) of a finished run directory; the model
    comes from ``model.json`` + ``checkpoints/final`` (:func:`tfrec_attn.models.load_model`)."""
    from tfrec_attn.models import load_model
    from tfrec_attn.training.config import load_config

    config = load_config(os.path.join(output_dir, "config.yaml"))
    vocabulary = ItemVocabulary.load(os.path.join(output_dir, "vocab", "items.txt"))
    return config, vocabulary, load_model(output_dir)
