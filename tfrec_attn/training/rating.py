"""The rating recipe: the ranking model's rating head on a train/test rating split
(ML-100K's canonical ``u1.base`` / ``u1.test``; RMSE / MAE as in the literature).

    >>> result = train(load_config("training/configs/ml100k_rating.yaml"), read_movielens("ml-100k"),
    ...                "runs/rating")      # recipe: rating; split.fold: 1 (u1.base / u1.test)
    >>> result.metrics["test"]  # {"RMSE": ..., "MAE": ..., "count": 20000, "baseline_RMSE": ...}

The same engine (:class:`~tfrec_attn.training.engine.Trainer`) trains the same
:class:`~tfrec_attn.models.RankingModel` as the ranking recipe (a sibling: both derive
:class:`~tfrec_attn.training.ranking.TargetAttentionRecipe`), with the rating head only and
one candidate per row. What differs is the data:

* a row is one rating ``(u, i, r)`` of the training part: the candidate is ``i``, the label
  ``r``, and the history is the user's OTHER training ratings — never the target itself —
  oldest first, the newest ``model.max_len`` kept, each with its rating and time-gap ids
  (:func:`~tfrec_attn.data.ranking_rows.history_arrays`); user features come from the
  dataset's ``users``;
* a test row's history is all the user's training ratings (a rating split is not
  chronological: the history may hold ratings given after the target);
* selection: a seeded random ``split.validation_fraction`` (5%) of the training ratings is held
  out; its rows read the other 95% as history and the model is trained on the 95% alone.
  ``val_rmse`` (min) picks the epoch;
* refit (``train.refit_with_validation``): a new model on every training rating for the
  selected number of epochs. Only the epoch count (and the config, chosen beforehand) comes
  from validation — no weight is fitted on it, unlike the two-stage blend of
  :class:`RankingRecipe` — so refitting is sound, and it lets the held-out 5% of the
  ratings train and serve as history;
* items that occur only in the test part are OOV (model index 1), users without a
  training rating have an empty history: neither is an error.

``test_metrics`` also reports :class:`~tfrec_attn.baselines.BiasedBaseline` (global mean +
user bias + item bias) fitted on the same training part (``baseline_RMSE`` / ``baseline_MAE``).
``train.positions_per_user`` is not used (every training rating is a row).
"""

from __future__ import annotations

import numpy as np

from tfrec_attn.data.ranking_rows import EventRows, history_arrays, ranking_dataset
from tfrec_attn.data.rating_splits import RatingSplit
from tfrec_attn.features.vocab import FIRST_ITEM_INDEX, ItemVocabulary
from tfrec_attn.training.ranking import TargetAttentionRecipe
from tfrec_attn.training.recipe import Recipe, register_recipe


class RatingSplitRecipe(Recipe):
    """What the rating recipes share: a :class:`~tfrec_attn.data.RatingSplit` (default: the
    dataset's GroupLens fold ``split.fold``), the seeded selection hold-out of its training
    ratings (``split.validation_fraction``, seeded by ``split.validation_seed`` alone, so every
    seed and every rating recipe is selected on the same ratings), ``val_rmse`` selection, and the
    test report beside the biased baseline. A subclass predicts: :meth:`predict_stage`."""

    metric_names = ("val_rmse", "val_mae")
    selection_metric = "val_rmse"
    selection_mode = "min"

    def __init__(self, config, dataset, split: RatingSplit | None = None):
        if split is None and dataset is not None:
            from tfrec_attn.data.rating_splits import grouplens_fold

            split = grouplens_fold(dataset.interactions, config.split.fold)
        self.config = config
        self.data = dataset
        self.split = split
        self.vocabulary = None
        if split is None:  # restored for export: no data
            return
        train = split.train
        rated = np.flatnonzero(np.isfinite(train.ratings))
        if not len(rated):
            raise ValueError(f"split {split.name!r}: none of the {len(train)} training interactions is rated")
        held = np.random.default_rng(config.split.validation_seed).choice(
            rated, size=max(1, int(round(config.split.validation_fraction * len(rated)))), replace=False)
        self.is_validation = np.zeros(len(train), bool)
        self.is_validation[held] = True

    @classmethod
    def restore(cls, config, run, dataset=None, split=None):
        recipe = cls(config, dataset, split)
        recipe._restore_files(run)
        return recipe

    def _restore_files(self, run) -> None:
        raise NotImplementedError

    def _item_vocabulary(self) -> ItemVocabulary:
        """The training part's rated items, most rated first."""
        items, counts = np.unique(self.split.train.item_ids, return_counts=True)
        return ItemVocabulary(items[np.argsort(-counts, kind="stable")])

    def stage_ratings(self, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user ids, item ids, ratings) of the ``validation`` hold-out or the rated ``test`` part."""
        if stage == "validation":
            part, rows = self.split.train, np.flatnonzero(self.is_validation)
        elif stage == "test":
            part = self.split.test
            rows = np.flatnonzero(np.isfinite(part.ratings))
        else:
            raise ValueError(f"stage must be validation or test, got {stage!r}")
        return part.user_ids[rows], part.item_ids[rows], part.ratings[rows]

    def predict_stage(self, model, stage: str) -> np.ndarray:
        """float [n]: the model's rating of each of :meth:`stage_ratings` ``(stage)``."""
        raise NotImplementedError

    def validation_metrics(self, model):
        from tfrec_attn.evaluation.rating import rating_metrics

        metrics = rating_metrics(self.predict_stage(model, "validation"), self.stage_ratings("validation")[2])
        return {"val_rmse": metrics["RMSE"], "val_mae": metrics["MAE"]}

    def test_metrics(self, model):
        """RMSE / MAE / count on the test part, beside the biased baseline's on the same split."""
        from tfrec_attn.baselines.biased import biased_baseline_metrics
        from tfrec_attn.evaluation.rating import rating_metrics

        users, items, ratings = self.stage_ratings("test")
        metrics = rating_metrics(self.predict_stage(model, "test"), ratings)
        reference = biased_baseline_metrics(self.split.train, users, items, ratings)
        metrics.update(baseline_RMSE=reference["RMSE"], baseline_MAE=reference["MAE"],
                       oov_items=int(np.sum(self.vocabulary.model_indices(items) < FIRST_ITEM_INDEX)),
                       split=self.split.name)
        return metrics

    def summary(self, metrics):
        test = metrics["test"]
        return (f"{super().summary(metrics)}\n{self.split.name} test ratings ({test['count']:,}): RMSE "
                f"{test['RMSE']:.4f}, MAE {test['MAE']:.4f}; biased baseline (mean + user + item bias) RMSE "
                f"{test['baseline_RMSE']:.4f}, MAE {test['baseline_MAE']:.4f}")


@register_recipe("rating")
class RatingRecipe(RatingSplitRecipe, TargetAttentionRecipe):
    """The ranking network's rating head on a :class:`~tfrec_attn.data.RatingSplit`
    (see the module docstring).

    Args:
        config: RatingConfig.
        dataset: Dataset. Ratings (``split`` default: its GroupLens fold ``split.fold``), item
            metadata and user features.
        split: RatingSplit or None. ``train`` (e.g. ``u1.base``) and ``test`` (``u1.test``).

    Example:
        >>> recipe = RatingRecipe(config, dataset, grouplens_fold(dataset.interactions, 1))
        >>> Trainer(recipe, config, "runs/rating").run().metrics["test"]["RMSE"]
    """

    def __init__(self, config, dataset, split: RatingSplit | None = None):
        super().__init__(config, dataset, split)
        self.user_encoder = self.user_ids = self.item_features = None
        self._rows: dict = {}
        if self.split is None:
            return
        train, test = self.split.train, self.split.test
        self.user_vocab, users = np.unique(np.concatenate([train.user_ids, test.user_ids]), return_inverse=True)
        self.train_users, self.test_users = users[:len(train)], users[len(train):]

    _restore_files = TargetAttentionRecipe._restore_files

    @property
    def export_name(self) -> str:
        return self.name

    @property
    def explain_positions(self) -> int:
        from tfrec_attn.config.ranking import RankingExportConfig

        return RankingExportConfig.explain_positions  # a rating run has no export section of its own

    # -- preparation ---------------------------------------------------------------------
    def prepare(self, run):
        train = self.split.train
        self.vocabulary = self._item_vocabulary()
        self.train_items = self.vocabulary.model_indices(train.item_ids)
        self._prepare_users(self.user_vocab)
        self._prepare_items()
        self._set_rating_range(train.ratings)
        self._save(run)

    # -- rows ------------------------------------------------------------------------------
    def event_rows(self, users, items, ratings, targets, history) -> EventRows:
        """Rating rows: per target, the user's ``history`` training ratings except the target.

        Args:
            users: int [n]. User index (:attr:`user_vocab`) of each row.
            items: int [n]. The rated item (model index, 1 = OOV).
            ratings: float [n]. The rating (the label).
            targets: int [n]. Row of ``split.train`` the rating is (excluded from its own
                history), or -1 (a test rating).
            history: bool [len(split.train)]. Training rows that may be read as history.
        """
        train = self.split.train
        pool = np.flatnonzero(history)
        pool = pool[np.lexsort((pool, train.timestamps[pool], self.train_users[pool]))]  # by user, then time
        bounds = np.searchsorted(self.train_users[pool], np.arange(len(self.user_vocab) + 1))
        width = self.config.model.max_len
        chosen = []
        for user, target in zip(users, targets):
            profile = pool[bounds[user]:bounds[user + 1]]
            if target >= 0:
                profile = profile[profile != target]
            chosen.append(profile[-width:])
        ids, rating_ids, gaps = history_arrays([self.train_items[c] for c in chosen],
                                               [train.timestamps[c] for c in chosen],
                                               [train.ratings[c] for c in chosen], width, self.num_ratings)
        return EventRows(ids, rating_ids, gaps, np.asarray(users, np.int64), np.asarray(items, np.int64),
                         np.asarray(ratings, np.float32))

    def rows(self, include_validation: bool = False) -> EventRows:
        """Training rows (cached): every rated training rating outside the validation hold-out
        (or every one, ``include_validation``), its history read from the same ratings."""
        key = "base" if include_validation else "fit"
        if key not in self._rows:
            train = self.split.train
            history = np.ones(len(train), bool) if include_validation else ~self.is_validation
            targets = np.flatnonzero(history & np.isfinite(train.ratings))
            self._rows[key] = self.event_rows(self.train_users[targets], self.train_items[targets],
                                              train.ratings[targets], targets, history)
        return self._rows[key]

    def stage_rows(self, stage: str) -> EventRows:
        """``validation`` rows (history: the other 95%) or ``test`` rows (history: every
        training rating; rows without a rating are dropped), cached."""
        if stage not in self._rows:
            train, test = self.split.train, self.split.test
            if stage == "validation":
                targets = np.flatnonzero(self.is_validation)
                self._rows[stage] = self.event_rows(self.train_users[targets], self.train_items[targets],
                                                    train.ratings[targets], targets, ~self.is_validation)
            elif stage == "test":
                rated = np.flatnonzero(np.isfinite(test.ratings))
                self._rows[stage] = self.event_rows(
                    self.test_users[rated], self.vocabulary.model_indices(test.item_ids[rated]),
                    test.ratings[rated], np.full(len(rated), -1), np.ones(len(train), bool))
            else:
                raise ValueError(f"stage must be validation or test, got {stage!r}")
        return self._rows[stage]

    # -- evaluation ------------------------------------------------------------------------
    def predict_ratings(self, model, rows: EventRows) -> np.ndarray:
        """The rating head's prediction for each row's item (float32 [n], within the
        training ratings' range)."""
        from tfrec_attn.evaluation.two_stage import ranker_outputs

        inputs = {"history": rows.history, "history_ratings": rows.ratings, "history_gaps": rows.gaps,
                  "user_features": self.user_ids[rows.users]}
        return ranker_outputs(model, inputs, rows.positive[:, None])["rating"][:, 0]

    def predict_stage(self, model, stage):
        return self.predict_ratings(model, self.stage_rows(stage))

    def num_examples(self, include_validation=False):
        return len(self.rows(include_validation))

    def dataset(self, input_context, include_validation=False, repeat=True):
        c = self.config
        return ranking_dataset(self.rows(include_validation), self.user_ids, self.vocabulary.num_indices,
                               input_context=input_context, batch_size=c.train.batch_size, seed=c.seed, hard=0,
                               random=0, event_feature_dropout=c.model.event_feature_dropout, repeat=repeat)
