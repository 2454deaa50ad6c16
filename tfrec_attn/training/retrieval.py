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


ROWS = 512  # the Evaluator's batch of users


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
    text_dim = getattr(model.item_tower, "text_dim", 0)
    # Always a tensor (empty without unknown items): one trace of score_items per model.
    extra = tf.zeros([0, model.item_embeddings().shape[-1]], tf.float32)
    if len(unknown):
        if text_dim and item_features is None and item_texts is None:
            raise ValueError(f"{len(unknown)} catalogue items are unknown to the model; a text item tower "
                             "scores them from their text, so pass item_features")
        if getattr(model.item_tower, "encoder_model", None) is not None and item_texts is not None:
            from tfrec_attn.layers.text_encoder import encode_texts

            features = encode_texts(model.item_tower.encoder_model, [item_texts[i] for i in unknown])
        else:
            features = item_features[unknown] if text_dim else np.zeros((len(unknown), 0), np.float32)
        extra = tf.constant(model.new_item_vectors(tf.constant(features, tf.float32)))
    table = np.where(known, vocabulary.table_rows(to_model), 0)
    table[unknown] = vocabulary.num_indices - 2 + np.arange(len(unknown))  # the extra columns
    columns = tf.constant(table)
    width = pad_width or model.max_len

    def score(users, histories):
        # One shape per model (rows padded to a full evaluation batch, columns to `width`), so
        # score_items traces once per model, not once per batch shape.
        batch = np.zeros((max(len(histories), ROWS), width), np.int64)
        for row, h in enumerate(histories):
            h = to_model[np.asarray(h, np.int64)][-width:]
            batch[row, : len(h)] = h
        scores = model.score_items(tf.constant(batch), extra)
        return tf.gather(scores[: len(histories)], columns, axis=1).numpy()

    return score


def evaluate_model(model, vocabulary: ItemVocabulary, split: LeaveOneOutSplit, stage: str,
                   sampled: bool = True, item_features=None, users=None, item_texts=None) -> dict:
    """The full-ranking protocol's metrics of an in-memory retrieval model (``users``:
    a subset of ``split.evaluated``, default all)."""
    scorer = catalogue_scorer(model, vocabulary, split, item_features=item_features, item_texts=item_texts)
    return Evaluator(split, stage, users=users).evaluate(scorer, sampled=sampled)


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
        self.data = dataset  # item metadata (texts) for text towers
        self.split = split or leave_one_out(dataset.interactions, config.data.min_interactions)
        self.vocabulary = None
        self.item_counts = None
        self.item_features = None  # text features of the split's catalogue (text towers)
        self.item_texts = None  # ... and its texts
        self.text_table = None  # the features in model index order

    def prepare(self, output_dir):
        self.vocabulary = training_vocabulary(self.split)
        counts = np.zeros(self.vocabulary.num_indices, np.float64)
        to_model = self.vocabulary.model_indices(self.split.item_vocab)
        np.add.at(counts, to_model, self.split.train_item_counts())
        counts[:2] = 0
        self.item_counts = counts
        if self.config.model.item_tower.type != "id":
            from tfrec_attn.text.features import text_features

            self.item_texts = catalogue_texts(self.config, self.data, self.split)
            self.item_features = text_features(self.config.model.item_tower, self.item_texts)
            known = self.vocabulary.is_item(to_model)
            self.text_table = np.zeros((self.vocabulary.num_indices, self.item_features.shape[1]), np.float32)
            self.text_table[to_model[known]] = self.item_features[known]
        if output_dir:
            self.vocabulary.save(os.path.join(output_dir, "vocab", "items.txt"))

    def build_model(self, static_shapes=False):
        from tfrec_attn.models import build_retrieval_model

        model = build_retrieval_model(self.config.model, self.config.loss, self.vocabulary.num_indices,
                                      item_counts=self.item_counts, seed=self.config.seed,
                                      static_shapes=static_shapes, text_features=self.text_table)
        if getattr(model.item_tower, "encoder_model", None) is not None:  # fine-tuning reads the texts
            texts = [""] * self.vocabulary.num_indices
            for index, text in zip(self.vocabulary.model_indices(self.split.item_vocab), self.item_texts):
                if self.vocabulary.is_item(index):
                    texts[index] = text
            model.item_tower.set_texts(texts)
        return model

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
        metrics = evaluate_model(model, self.vocabulary, self.split, stage, sampled=False,
                                 item_features=self.item_features, item_texts=self.item_texts)
        return {prefix + short: metrics[name] for name, short in LOG_NAMES.items()}

    def validation_metrics(self, model):
        return self._metrics(model, "validation", "val_")

    def tracking_metrics(self, model):
        return self._metrics(model, "test", "test_")

    def test_metrics(self, model):
        return evaluate_model(model, self.vocabulary, self.split, "test", item_features=self.item_features,
                              item_texts=self.item_texts)

    def export(self, model, base_path, **options):
        from tfrec_attn.export import export_retrieval

        export = self.config.export
        settings = {"model_name": export.model_name, "k": export.k, "index": export.index, **options}
        return export_retrieval(model, self.vocabulary, base_path, **settings)


def training_vocabulary(split: LeaveOneOutSplit) -> ItemVocabulary:
    """A model's id vocabulary: the split's items that occur in training (train +
    validation targets), most frequent first. Other catalogue items are new to the model
    (scored from their text by a text tower, as OOV by an id tower)."""
    return ItemVocabulary(split.item_vocab[split.training_items(include_validation=True)])


def catalogue_texts(config, dataset, split: LeaveOneOutSplit) -> list:
    """The text of every item of ``split``'s catalogue, in catalogue order (the raw id for
    an item without metadata, with a warning)."""
    if dataset is None:
        raise ValueError(f"model.item_tower.type={config.model.item_tower.type} reads item texts: "
                         "pass the dataset, not only a split")
    texts = [dataset.item_text(item) for item in split.item_vocab]
    missing = sum(1 for item in split.item_vocab if item not in dataset.items)
    if missing:
        import warnings

        warnings.warn(f"{missing} of {split.num_items} items have no metadata (title/text); the text tower "
                      "reads their raw id instead", stacklevel=2)
    return texts


def catalogue_text_features(config, dataset, split: LeaveOneOutSplit, *, progress: bool = True) -> np.ndarray:
    """The item tower encoder's features of every item of ``split``'s catalogue, in
    catalogue order ([num_items, text_dim]; cached, see :mod:`tfrec_attn.text.features`)."""
    from tfrec_attn.text.features import text_features

    return text_features(config.model.item_tower, catalogue_texts(config, dataset, split), progress=progress)


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
