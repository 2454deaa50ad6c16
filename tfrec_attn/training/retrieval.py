"""The retrieval recipe: the transformer two-tower model on leave-one-out sequences.

    >>> from tfrec_attn.training import train
    >>> result = train(load_config("training/configs/ml100k_retrieval.yaml"), read_movielens("ml-100k"),
    ...                "runs/retrieval")
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from tfrec_attn.data.splits import LeaveOneOutSplit, leave_one_out
from tfrec_attn.evaluation.retrieval import Retriever, evaluate_model
from tfrec_attn.features.vocab import ItemVocabulary
from tfrec_attn.training.recipe import Recipe, register_recipe

# Metric names as they appear in Keras logs (CSVLogger, TensorBoard, EarlyStopping).
LOG_NAMES = {"HR@10": "hr10", "NDCG@10": "ndcg10", "HR@50": "hr50", "MRR": "mrr"}
TERMS_FILE = "interest_terms.npz"  # RUN/interest_terms.npz: the tables the interests' labels are written in
PROFILE_DIR = "interest_profile"  # RUN/interest_profile/: the fitted interest profile (model.user_tower.profile)
INTEREST_LOG_NAMES = ("interest_cosine", "interest_min_share", "interests_in_top10")  # model.user_tower.interests > 1


@register_recipe("retrieval")
class RetrievalRecipe(Recipe):
    """Transformer two-tower retrieval, next-item softmax at every position.

    Args:
        config: RetrievalConfig.
        dataset: Dataset (ignored when ``split`` is given).
        split: LeaveOneOutSplit. The split to train, select and report on.
    """

    selection_metric = "val_ndcg10"

    def __init__(self, config, dataset=None, split: LeaveOneOutSplit | None = None):
        self.config = config
        self.data = dataset  # item metadata (texts) for text towers
        self.split = split if split is not None or dataset is None else \
            leave_one_out(dataset.interactions, config.data.min_interactions)
        self.vocabulary = None
        self.item_counts = None
        self.item_features = None  # text features of the split's catalogue (text towers)
        self.item_texts = None  # ... and its texts
        self.text_table = None  # the features in model index order
        self.profile = None  # the interest profile (model.user_tower.profile), a ServedProfile
        self.item_terms = None  # (genres, words) ItemTerms the interests' labels are written in

    @property
    def metric_names(self) -> tuple:
        """The logged validation metrics; with several interests, also their collapse
        diagnostics (:func:`tfrec_attn.evaluation.interests.interest_diagnostics`)."""
        names = tuple(f"val_{short}" for short in LOG_NAMES.values())
        if self.config.model.user_tower.interests > 1:
            names += tuple(f"val_{name}" for name in INTEREST_LOG_NAMES)
        return names

    @classmethod
    def restore(cls, config, run, dataset=None, split=None):
        """A finished run's recipe: its vocabulary; with ``dataset`` (or a ``split``), the
        catalogue's texts and text features that a text tower scores unknown items from."""
        recipe = cls(config, dataset, split)
        recipe.vocabulary = ItemVocabulary.load(run.vocab_file("items.txt"))
        if config.model.user_tower.interests > 1 and os.path.isfile(run.file(TERMS_FILE)):
            from tfrec_attn.features.item_terms import ItemTerms

            recipe.item_terms = ItemTerms.load_pair(run.file(TERMS_FILE))
        if config.model.user_tower.profile and os.path.isdir(run.file(PROFILE_DIR)):
            from tfrec_attn.models.interest_profile import load_profile

            recipe.profile = load_profile(run.file(PROFILE_DIR))
        if recipe.split is not None and config.model.item_tower.reads_text:
            recipe.item_texts = catalogue_texts(config, dataset, recipe.split)
            recipe.item_features = catalogue_text_features(config, dataset, recipe.split)
        return recipe

    def retriever(self, model) -> Retriever:
        """``model`` (one of this recipe's) with what scoring this split's catalogue needs."""
        return Retriever(model, self.vocabulary, self.item_features, self.item_texts)

    def prepare(self, run):
        self.vocabulary = training_vocabulary(self.split)
        counts = np.zeros(self.vocabulary.num_indices, np.float64)
        to_model = self.vocabulary.model_indices(self.split.item_vocab)
        np.add.at(counts, to_model, self.split.train_item_counts())
        counts[:2] = 0
        self.item_counts = counts
        if self.config.model.item_tower.needs_text_features:
            from tfrec_attn.text.features import text_features

            self.item_texts = catalogue_texts(self.config, self.data, self.split)
            self.item_features = text_features(self.config.model.item_tower, self.item_texts)
            known = self.vocabulary.is_item(to_model)
            self.text_table = np.zeros((self.vocabulary.num_indices, self.item_features.shape[1]), np.float32)
            self.text_table[to_model[known]] = self.item_features[known]
        if run is not None:
            self.vocabulary.save(run.vocab_file("items.txt"))

    def build_model(self, static_shapes=False):
        from tfrec_attn.models import build_retrieval_model

        tower = self.config.model.item_tower
        model = build_retrieval_model(self.config.model, self.config.loss, self.vocabulary.num_indices,
                                      item_counts=self.item_counts, seed=self.config.seed, static_shapes=static_shapes,
                                      text_features=self.text_table if tower.reads_text else None)
        if tower.id_init == "pca":  # the id rows of known items: the principal components of their text
            from tfrec_attn.models.initialization import projected_init

            table = model.item_tower.id_table
            rows = np.arange(self.vocabulary.num_indices)
            table.assign(projected_init(table.numpy(), rows[2:], self.text_table[2:]))
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
                    older_windows=c.train.older_windows,
                    rating_dropout=c.model.user_tower.rating_dropout if c.model.user_tower.num_ratings else 0.0)

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
        ratings = self.split.train_part("ratings", include_validation) \
            if self.config.model.user_tower.num_ratings else None
        return sequence_dataset(sequences, self.vocabulary, input_context=input_context,
                                timestamps=self.split.train_part("timestamps", include_validation),
                                ratings=ratings, **self._options(repeat))

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
        logged = {prefix + short: metrics[name] for name, short in LOG_NAMES.items()}
        if getattr(model, "num_interests", 1) > 1:
            from tfrec_attn.evaluation.interests import interest_diagnostics

            diagnostics = interest_diagnostics(model, self.vocabulary, self.split, stage)
            logged.update({prefix + name: diagnostics[name] for name in INTEREST_LOG_NAMES})
        return logged

    def validation_metrics(self, model):
        return self._metrics(model, "validation", "val_")

    def tracking_metrics(self, model):
        return self._metrics(model, "test", "test_")

    def test_metrics(self, model):
        return evaluate_model(model, self.vocabulary, self.split, "test", item_features=self.item_features,
                              item_texts=self.item_texts)

    def summary(self, metrics):
        from tfrec_attn.evaluation import format_table

        return (f"trained {metrics['epochs']} epochs in {metrics['train_seconds']:.0f}s "
                f"({metrics['sequences_per_second']:.0f} sequences/s); best validation NDCG@10 "
                f"{metrics['validation'].get('val_ndcg10', float('nan')):.4f} at epoch {metrics['best_epoch']}\n"
                "test split, full ranking:\n" + format_table({"retrieval": metrics["test"]}))

    def finish(self, model, run, verbose=0):
        """With several interests: the genre and word tables their labels are written in, kept
        in RUN/interest_terms.npz (so an export from the run alone labels them too). With
        ``model.user_tower.profile``: the interest profile fitted on the final model's
        interests over the training windows, saved in RUN/interest_profile/."""
        if self.config.model.user_tower.interests > 1 and self.data is not None:
            from tfrec_attn.features.item_terms import ItemTerms, item_terms

            self.item_terms = item_terms(self.data, self.vocabulary)
            ItemTerms.save_pair(run.file(TERMS_FILE), *self.item_terms)
        if not self.config.model.user_tower.profile:
            return
        from tfrec_attn.config import ConfigError
        from tfrec_attn.training.interest_profile import fit_profile

        where = self.config.origin("model.user_tower.profile")
        if self.data is None:
            raise ConfigError(f"{where}: the interest profile needs the dataset's item genres (categories)")
        if verbose:
            print("fitting the interest profile on the final model's interests over the training windows "
                  "(model.user_tower.profile)", flush=True)
        began = time.perf_counter()
        try:
            profile = fit_profile(model, self.vocabulary, self.split, self.data, seed=self.config.seed)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
        profile.save(run.file(PROFILE_DIR))
        self.profile = profile.served()
        if verbose:
            print(f"interest profile fitted in {time.perf_counter() - began:.0f}s: {run.file(PROFILE_DIR)}", flush=True)

    def export(self, model, base_path, **options):
        """The retrieval SavedModel (history -> top-k ids and scores, ``rank``, ``embed_items``;
        ``interests`` with several interests, ``profile`` with the interest profile) with
        ``export.model_name``, ``export.k`` and ``export.index`` unless ``options`` set them."""
        from tfrec_attn.export import export_retrieval

        export = self.config.export
        settings = {"model_name": export.model_name, "k": export.k, "index": export.index,
                    **{name: value for name, value in options.items() if value is not None}}
        if self.config.model.user_tower.interests > 1 and "item_terms" not in settings:
            if self.item_terms is None:  # not computed by finish() nor kept by the run: from the data (if any)
                from tfrec_attn.features.item_terms import item_terms

                self.item_terms = item_terms(self.data, self.vocabulary)
            settings["item_terms"] = self.item_terms
        if self.profile is not None and "profile" not in settings:
            settings["profile"] = self.profile
        return [export_retrieval(model, self.vocabulary, base_path, **settings)]


def training_vocabulary(split: LeaveOneOutSplit) -> ItemVocabulary:
    """A model's id vocabulary: the split's items that occur in training (train +
    validation targets), most frequent first. Other catalogue items are new to the model
    (scored from their text by a text tower, as OOV by an id tower)."""
    return ItemVocabulary(split.item_vocab[split.training_items(include_validation=True)])


def without_item_text(config, dataset):
    """``config`` for ``dataset``: a tower that reads item text falls back to ids, with a
    one-line note, when the data set has no item metadata at all (interactions only)."""
    tower = config.model.item_tower
    if dataset is None or dataset.items or not tower.needs_text_features:
        return config
    import dataclasses
    import sys

    print(f"note: {dataset.name} has no item texts (no items file): model.item_tower.type={tower.type} falls back "
          "to type=id", file=sys.stderr, flush=True)
    ids = dataclasses.replace(tower, type="id", whitening="none", id_init="random")
    return dataclasses.replace(config, model=dataclasses.replace(config.model, item_tower=ids))


def catalogue_texts(config, dataset, split: LeaveOneOutSplit) -> list:
    """The text of every item of ``split``'s catalogue, in catalogue order (the raw id for
    an item without metadata, with a warning)."""
    if dataset is None:
        raise ValueError(f"model.item_tower.type={config.model.item_tower.type} reads item texts: "
                         "pass the dataset, not only a split")
    if dataset.items and not any(item.text.strip() for item in dataset.items.values()):
        from tfrec_attn.data.errors import DataFileError

        raise DataFileError(dataset.items_source or dataset.source,
                            f"title, text and genres are empty on all {len(dataset.items)} item lines; "
                            f"model.item_tower.type={config.model.item_tower.type} reads item text (fill them, or "
                            "train with --set model.item_tower.type=id)")
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


def load_retrievers(run_dir: str, dataset, split: LeaveOneOutSplit) -> tuple[Retriever, Retriever]:
    """(final, selection) Retrievers of a retrieval run on disk, scoring ``split``'s catalogue
    (a ranking recipe's ``retrieval.run_dir``)."""
    from tfrec_attn.config import ConfigError
    from tfrec_attn.training.run_dir import RunDirectory

    run = RunDirectory(run_dir)
    if not run.finished:
        raise ConfigError(f"retrieval.run_dir={run_dir!r}: not a finished retrieval run (no {run.MODEL}); "
                          "train one with `tfrec-attn train training/configs/ml100k_retrieval.yaml`")
    return retrievers(run.load(dataset, split))


def retrievers(result) -> tuple[Retriever, Retriever]:
    """(final, selection) Retrievers of a trained retrieval run (a TrainResult): ``final``,
    its returned model, gives the test candidates; the selection checkpoint (``best``,
    trained without the validation targets; ``final`` when absent) the validation
    candidates and the hard negatives. Both read the catalogue's text features the recipe
    already computed."""
    final = result.recipe.retriever(result.model)
    run = result.run
    best = result.recipe.retriever(run.load_model("best")) if run.has_checkpoint("best") else final
    return final, best


def build_model(config, vocabulary: ItemVocabulary, item_counts=None):
    """An untrained retrieval model for ``config`` over ``vocabulary`` (weights created)."""
    from tfrec_attn.models import build_retrieval_model

    return build_retrieval_model(config.model, config.loss, vocabulary.num_indices, item_counts=item_counts,
                                 seed=config.seed, static_shapes=config.train.jit_compile)
