"""The ranking recipe: DIN / BST target attention re-ranking the retrieval model's candidates.

    >>> from tfrec_attn.training import train
    >>> result = train(load_config("training/configs/ml100k_ranking.yaml"), read_movielens("ml-100k"),
    ...                "runs/ranking")

Training rows are user events of the leave-one-out split's training part (the newest
``train.positions_per_user`` per user, :mod:`tfrec_attn.data.ranking_rows`): the history
before the event (newest ``model.max_len`` items, with their ratings and times), the event's
item as the positive, its rating, and a pool of hard negatives — the retrieval model's top
``loss.hard_pool`` items for that history, the history and the positive excluded
(:mod:`tfrec_attn.training.hard_negatives`). Each epoch draws ``loss.hard_negatives`` from the
pool and ``loss.random_negatives`` from the catalogue (stateless, seeded). Selection: the
two-stage NDCG@10 on validation when a retrieval run is given (``retrieval.run_dir`` or in
memory), else validation AUC (:mod:`tfrec_attn.evaluation.two_stage`).
"""

from __future__ import annotations

import numpy as np

from tfrec_attn.data.ranking_rows import (
    EventRows,
    ranking_dataset,
    sequence_event_rows,
    stage_inputs,
)
from tfrec_attn.data.splits import LeaveOneOutSplit, leave_one_out
from tfrec_attn.features.vocab import ItemVocabulary
from tfrec_attn.training.recipe import Recipe, register_recipe
from tfrec_attn.training.retrieval import catalogue_texts, training_vocabulary

LOG_NAMES = {"NDCG@10": "ndcg10", "HR@10": "hr10", "AUC": "auc", "RMSE": "rmse"}


class TargetAttentionRecipe(Recipe):
    """What the ranking and rating recipes share: the target-attention network
    (:func:`~tfrec_attn.models.build_ranking_model`) over the item vocabulary, the item side
    features, the user features and the rating range, saved in and restored from the run."""

    def _prepare_users(self, user_ids) -> None:
        from tfrec_attn.data.dataset import User
        from tfrec_attn.features.ranking import UserFeatureEncoder

        self.user_encoder = UserFeatureEncoder.from_dataset(self.data)
        users = getattr(self.data, "users", None) or {}
        self.user_ids = self.user_encoder.encode([users.get(u) or User(u) for u in user_ids])

    def _prepare_items(self, *extra) -> None:
        """The item feature table: the data set's side features (``model.item_features``), then
        the ``extra`` columns ([num_indices, f] each; None = absent)."""
        from tfrec_attn.features.ranking import item_feature_table

        extra = [columns for columns in extra if columns is not None]
        if self.config.model.item_features or extra:
            table = item_feature_table(self.data, self.vocabulary)
            if not self.config.model.item_features:
                table = table[:, :0]
            self.item_features = np.concatenate([table, *extra], axis=1).astype(np.float32)

    def _set_rating_range(self, ratings: np.ndarray) -> None:
        """(low, high, mean) of the finite training ratings ((1, 5, 3.5) without any)."""
        ratings = ratings[np.isfinite(ratings)]
        low, high, mean = (float(ratings.min()), float(ratings.max()), float(ratings.mean())) if len(ratings) \
            else (1.0, 5.0, 3.5)
        self.rating_range = (low, high, mean) if low < high else (low, low + 1.0, low + 0.5)

    def _save(self, run) -> None:
        if run is not None:
            self.vocabulary.save(run.vocab_file("items.txt"))
            self.user_encoder.save(run.vocab_file("user_features.json"))

    def _restore_files(self, run) -> None:
        from tfrec_attn.features.ranking import UserFeatureEncoder

        self.vocabulary = ItemVocabulary.load(run.vocab_file("items.txt"))
        self.user_encoder = UserFeatureEncoder.load(run.vocab_file("user_features.json"))

    @property
    def export_name(self) -> str:
        """The ranking SavedModel's name (``BASE/<name>/<version>``)."""
        return self.config.export.model_name

    @property
    def explain_positions(self) -> int:
        """History items re-scored without, per candidate, by the exports' leave-one-out."""
        return self.config.export.explain_positions

    @property
    def num_ratings(self) -> int:
        return int(round(self.rating_range[1])) if self.config.model.rating_embeddings else 0

    def _retrieval_inputs(self) -> dict:
        """``build_ranking_model``'s retrieval arguments (none: the ranker reads no retrieval)."""
        return {}

    def _query_retrieval(self, model):
        """The frozen retrieval model inside the ranker's exports (None: it reads none)."""
        return None

    def build_model(self, static_shapes=False):
        from tfrec_attn.models.ranking import build_ranking_model

        return build_ranking_model(self.config.model, self.config.loss, self.vocabulary.num_indices,
                                   item_features=self.item_features, user_feature_sizes=self.user_encoder.sizes,
                                   rating_range=self.rating_range, **self._retrieval_inputs())

    def export(self, model, base_path, **options):
        """The ranking SavedModel (history + candidates -> scores, rating, attention)."""
        from tfrec_attn.export.ranking import export_ranking

        return [export_ranking(model, self.vocabulary, self.user_encoder, base_path,
                               model_name=options.get("model_name") or self.export_name,
                               max_len=self.config.model.max_len, num_ratings=model.network.num_ratings,
                               version=options.get("version"),
                               explain_positions=self.explain_positions, retrieval=self._query_retrieval(model))]


@register_recipe("ranking")
class RankingRecipe(TargetAttentionRecipe):
    """Target-attention ranking on the leave-one-out split.

    Args:
        config: RankingConfig.
        dataset: Dataset (item metadata, user features).
        split: LeaveOneOutSplit (default: the dataset's, as retrieval splits it).
        retrieval: :class:`~tfrec_attn.evaluation.retrieval.Retriever` of a trained
            retrieval model (test candidates), or None to load ``config.retrieval.run_dir``
            (or to train without hard negatives nor two-stage metrics).
        selection_retrieval: Retriever trained without the validation targets (validation
            candidates and hard negatives); default: the run's ``best`` checkpoint, else
            ``retrieval``.
    """

    def __init__(self, config, dataset, split: LeaveOneOutSplit | None = None, retrieval=None,
                 selection_retrieval=None):
        self.config = config
        self.data = dataset
        self.split = split if split is not None or dataset is None else \
            leave_one_out(dataset.interactions, config.data.min_interactions)
        self.retrieval = retrieval
        self.selection_retrieval = selection_retrieval
        if retrieval is None and config.retrieval.run_dir and self.split is not None:
            from tfrec_attn.training.retrieval import load_retrievers

            self.retrieval, self.selection_retrieval = load_retrievers(config.retrieval.run_dir, dataset, self.split)
        self.selection_retrieval = self.selection_retrieval or self.retrieval
        # The frozen retrieval model the ranker reads (and mines hard negatives with): the
        # selection checkpoint, or with retrieval.holdout_events one trained without the
        # ranker's training events (prepare() trains it).
        self.feature_retrieval = self.selection_retrieval
        if config.model.retrieval_score and self.selection_retrieval is None and dataset is not None:
            from tfrec_attn.config import ConfigError

            raise ConfigError("model.retrieval_score: the ranker reads a retrieval model, and none is given "
                              "(set retrieval.run_dir to a finished retrieval run)")
        interaction = config.loss.interaction_weight > 0
        if interaction and self.retrieval is not None:
            self.selection_metric, self.selection_mode = "val_ndcg10", "max"
        elif interaction:
            self.selection_metric, self.selection_mode = "val_auc", "max"
        else:
            self.selection_metric, self.selection_mode = "val_rmse", "min"
        self.metric_names = tuple(f"val_{short}" for short in LOG_NAMES.values())
        self.vocabulary = None
        self.user_encoder = None
        self.user_ids = None  # [num_users, 4] user feature ids by split user index
        self.item_features = None
        self._rows = {}

    @classmethod
    def restore(cls, config, run, dataset=None, split=None):
        """A finished run's recipe: its vocabularies, and for the ``recommend`` export the
        retrieval run it re-ranked (``retrieval.run_dir``) when that run is on disk."""
        from tfrec_attn.evaluation.retrieval import Retriever
        from tfrec_attn.training.run_dir import RunDirectory

        source = RunDirectory(config.retrieval.run_dir) if config.retrieval.run_dir else None
        retrieval = selection = None
        if source is not None and source.finished and dataset is None and split is None:
            vocabulary = ItemVocabulary.load(source.vocab_file("items.txt"))
            retrieval = Retriever(source.load_model(), vocabulary)
            if config.model.retrieval_score and source.has_checkpoint("best"):
                selection = Retriever(source.load_model("best"), vocabulary)
        elif config.model.retrieval_score and (source is None or not source.finished):
            from tfrec_attn.config import ConfigError

            raise ConfigError(f"retrieval.run_dir={config.retrieval.run_dir!r}: the ranker reads this retrieval run "
                              "(model.retrieval_score) and it is not a finished run")
        recipe = cls(config, dataset, split, retrieval=retrieval, selection_retrieval=selection)
        if recipe._holdout:
            part = RunDirectory(run.file(*cls.HOLDOUT_PART))
            recipe.feature_retrieval = Retriever(part.load_model(), ItemVocabulary.load(part.vocab_file("items.txt")))
        recipe._restore_files(run)
        return recipe

    # -- preparation ---------------------------------------------------------------------
    @property
    def _holdout(self) -> int:
        return self.config.retrieval.holdout_events if self.config.model.retrieval_score else 0

    HOLDOUT_PART = ("parts", "retrieval")  # RUN/parts/retrieval: the held-out retrieval run

    def _train_holdout_retrieval(self, run):
        """The retrieval run's config trained again (no refit) on the split that holds out each
        user's newest ``retrieval.holdout_events`` training events — the ranker's training rows —
        in ``RUN/parts/retrieval`` (reused when finished): its features for those rows are then
        as honest as for the validation and test targets, where the selection checkpoint, which
        trained on the rows, would score their positives too well."""
        import dataclasses

        from tfrec_attn.config import ConfigError
        from tfrec_attn.training import train
        from tfrec_attn.training.retrieval import retrievers
        from tfrec_attn.training.run_dir import RunDirectory

        source = self.config.retrieval.run_dir
        if not source or not RunDirectory(source).finished:
            raise ConfigError(f"retrieval.holdout_events: needs retrieval.run_dir (a finished retrieval run whose "
                              f"config it trains again), got {source!r}")
        if run is None:
            raise ConfigError("retrieval.holdout_events: a worker without the run directory (not the chief) cannot "
                              "train the held-out retrieval model; set it to 0 for multi-worker training")
        split = self.split.holding_out(self._holdout, self.config.data.min_interactions)
        part = RunDirectory(run.file(*self.HOLDOUT_PART))
        if part.finished:
            print(f"ranking: the held-out retrieval model, reused from {part.path}", flush=True)
            return retrievers(part.load(self.data, split))[0]
        config = RunDirectory(source).load_config()
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, refit_with_validation=False))
        print(f"ranking: training the retrieval model without each user's newest {self._holdout} training events "
              f"(the ranker's rows) in {part.path}", flush=True)
        result = train(config, self.data, part.path, split=split, verbose=0, evaluate_test=False)
        validation = result.metrics.get("validation", {})
        print(f"ranking: held-out retrieval model: {result.metrics.get('epochs')} epochs, validation NDCG@10 "
              f"{validation.get('val_ndcg10', float('nan')):.4f} on its held-out split", flush=True)
        return retrievers(result)[0]

    def prepare(self, run):
        if self._holdout:
            self.feature_retrieval = self._train_holdout_retrieval(run)
        self.vocabulary = training_vocabulary(self.split)
        self._prepare_users(self.split.user_ids)
        self._prepare_items(self._text_table() if self.config.model.text_features else None,
                            self._popularity_column() if self.config.model.popularity else None)
        self._set_rating_range(np.concatenate(self.split.train_part("ratings", True)))
        self._save(run)

    def _popularity_column(self) -> np.ndarray:
        """float32 [num_indices, 1]: each item's log count in the training part (no validation
        target: selection reads none of its own), scaled to [0, 1]."""
        counts = np.bincount(self.vocabulary.model_indices(self.split.item_vocab)[
            np.concatenate(self.split.train_sequences(False))], minlength=self.vocabulary.num_indices)
        counts[:2] = 0
        logs = np.log1p(counts.astype(np.float32))
        return (logs / max(float(logs.max()), 1.0))[:, np.newaxis]

    def _text_table(self):
        from tfrec_attn.config import ItemTowerConfig
        from tfrec_attn.text.features import text_features

        tower = ItemTowerConfig(type="text", encoder=self.config.model.encoder)
        features = text_features(tower, catalogue_texts(self.config, self.data, self.split), progress=False)
        table = np.zeros((self.vocabulary.num_indices, features.shape[1]), np.float32)
        to_model = self.vocabulary.model_indices(self.split.item_vocab)
        known = self.vocabulary.is_item(to_model)
        table[to_model[known]] = features[known]
        return table

    # -- what the ranker reads of retrieval ------------------------------------------------
    def _retrieval_table(self) -> np.ndarray:
        """The frozen retrieval model's item vectors in the ranker's indices (0 where it lacks one)."""
        from tfrec_attn.models.initialization import retrieval_item_table

        return retrieval_item_table(self.feature_retrieval, self.vocabulary)

    def _retrieval_inputs(self) -> dict:
        if not self.config.model.retrieval_score:
            return {}
        from tfrec_attn.evaluation.retrieval import query_vectors

        interests = query_vectors(self.feature_retrieval.model, np.full((1, 1), 2, np.int64)).shape[1]
        return {"retrieval_items": self._retrieval_table(), "retrieval_interests": interests}

    def _query_retrieval(self, model):
        """The retrieval model the ranker reads (its selection checkpoint, frozen), checked to be
        the one it trained with: a retrieval run retrained since is a one-line error."""
        if not model.network.retrieval_dim:
            return None
        if getattr(self, "_retrieval_checked", None) is model:  # one check for ranking + recommend
            return self.feature_retrieval
        from tfrec_attn.training.run_dir import RunError

        trained = model.network.retrieval_items.embeddings.numpy()
        current = self._retrieval_table()
        if trained.shape != current.shape or not np.allclose(trained, current, atol=1e-5):
            raise RunError(f"retrieval.run_dir={self.config.retrieval.run_dir!r}: this ranker read another retrieval "
                           "model (its item vectors differ: the run was retrained or is another catalogue's); "
                           "train the ranker again on it")
        self._retrieval_checked = model
        return self.feature_retrieval

    def _stage_queries(self, stage: str, users) -> np.ndarray:
        from tfrec_attn.evaluation.retrieval import query_vectors

        position = {"validation": 2, "test": 1}[stage]
        r = self.feature_retrieval
        histories = [self.split.sequences[u][:-position] for u in users]
        return query_vectors(r.model, histories, r.vocabulary.model_indices(self.split.item_vocab))

    def build_model(self, static_shapes=False):
        from tfrec_attn.models.initialization import retrieval_item_init

        model = super().build_model(static_shapes)
        if self.config.model.init_from_retrieval and self.selection_retrieval is not None:
            table = model.network.items.ids.embeddings
            table.assign(retrieval_item_init(self.selection_retrieval, self.vocabulary, table.numpy()))
        return model

    # -- training rows ---------------------------------------------------------------------
    def rows(self, include_validation: bool = False) -> EventRows:
        """The training rows (cached): the newest ``train.positions_per_user`` events of every
        user's training part, each with the history before it, and their hard-negative pools."""
        if include_validation in self._rows:
            return self._rows[include_validation]
        c = self.config
        positions = c.train.positions_per_user
        if self._holdout:  # only the events the ranker's retrieval model never trained on
            positions = min(positions or c.retrieval.holdout_events, c.retrieval.holdout_events)
        rows = sequence_event_rows(self.split, self.vocabulary.model_indices(self.split.item_vocab),
                                   include_validation=include_validation,
                                   positions_per_user=positions, max_len=c.model.max_len,
                                   num_ratings=self.num_ratings)
        if c.model.retrieval_score:
            from tfrec_attn.training.hard_negatives import retrieval_row_queries

            rows.queries = retrieval_row_queries(self.feature_retrieval, self.split, rows, include_validation)
        if c.loss.interaction_weight and c.loss.hard_negatives and self.feature_retrieval is not None:
            from tfrec_attn.training.hard_negatives import hard_negative_pool

            rows.pool = hard_negative_pool(self.feature_retrieval, self.split, rows, self.vocabulary,
                                           c.loss.hard_pool, include_validation, queries=rows.queries)
        self._rows[include_validation] = rows
        return rows

    def num_examples(self, include_validation=False):
        return len(self.rows(include_validation))

    def dataset(self, input_context, include_validation=False, repeat=True):
        c = self.config
        rows = self.rows(include_validation)
        hard = c.loss.hard_negatives if rows.pool is not None else 0
        random = c.loss.random_negatives + (c.loss.hard_negatives - hard)
        if not c.loss.interaction_weight:
            hard = random = 0
        return ranking_dataset(rows, self.user_ids, self.vocabulary.num_indices, input_context=input_context,
                               batch_size=c.train.batch_size, seed=c.seed, hard=hard, random=random,
                               event_feature_dropout=c.model.event_feature_dropout, repeat=repeat)

    # -- evaluation ------------------------------------------------------------------------
    def stage_inputs(self, stage: str, users=None):
        """Network inputs (without candidates) for the evaluated users' ``stage`` histories."""
        users = self.split.evaluated if users is None else users
        inputs = stage_inputs(self.split, self.vocabulary.model_indices(self.split.item_vocab), stage, users,
                              max_len=self.config.model.max_len, num_ratings=self.num_ratings,
                              user_features=self.user_ids)
        if self.config.model.retrieval_score:
            inputs["retrieval_query"] = self._stage_queries(stage, users)
        return inputs

    def validation_metrics(self, model):
        from tfrec_attn.evaluation.two_stage import evaluate_two_stage

        # The blend weight is chosen here, with the retrieval model that never saw validation
        # targets, and saved with the epoch's weights.
        metrics = evaluate_two_stage(self, model, "validation", self.selection_retrieval, choose_weight=True)
        return {f"val_{short}": metrics.get(name, float("nan")) for name, short in LOG_NAMES.items()}

    def test_metrics(self, model):
        """The two-stage metrics, and beside the rating head's RMSE / MAE on the test events the
        biased baseline's (``baseline_*``) and the global mean's (``mean_*``), fitted on the same
        training part (train + validation)."""
        from tfrec_attn.evaluation.two_stage import evaluate_two_stage

        metrics = evaluate_two_stage(self, model, "test", self.retrieval)
        if "RMSE" in metrics:
            metrics.update(self._rating_references())
        return metrics

    def _rating_references(self) -> dict:
        from tfrec_attn.baselines.biased import biased_baseline_metrics
        from tfrec_attn.data import Interactions
        from tfrec_attn.evaluation.rating import rating_metrics

        split = self.split
        users = np.repeat(np.arange(split.num_users), [len(s) for s in split.train_sequences(True)])
        items = np.concatenate(split.train_sequences(True))
        ratings = np.concatenate(split.train_part("ratings", True))
        if not np.isfinite(ratings).any():
            return {}
        train = Interactions.from_rows(users.astype(str), items.astype(str), np.zeros(len(items)), ratings)
        actual = np.array([split.ratings[u][-1] for u in split.evaluated], np.float32)
        baseline = biased_baseline_metrics(train, split.evaluated.astype(str), split.targets("test").astype(str), actual)
        mean = rating_metrics(np.full(len(actual), np.nanmean(ratings), np.float32), actual)
        return {"baseline_RMSE": baseline["RMSE"], "baseline_MAE": baseline["MAE"], "mean_RMSE": mean["RMSE"],
                "mean_MAE": mean["MAE"], "rating_count": baseline["count"]}

    def summary(self, metrics):
        from tfrec_attn.evaluation import format_table
        from tfrec_attn.evaluation.two_stage import comparison_rows

        lines, test = [super().summary(metrics)], metrics["test"]
        rows = comparison_rows(test)
        if rows:
            k = self.config.retrieval.candidates
            lines.append(f"test split, full ranking (two-stage = retrieval top-{k} re-ranked; retrieval weight "
                         f"{test.get('retrieval_weight', 0):g}, candidate recall {test.get(f'recall@{k}', 0):.3f}):")
            lines.append(format_table(rows))
        extra = ", ".join(f"{name} {test[name]:.4f}" for name in ("AUC", "RMSE", "MAE") if name in test)
        if extra:
            lines.append(f"test target vs 100 sampled negatives and rating: {extra}")
        return "\n".join(lines)

    def export(self, model, base_path, **options):
        """The ranking SavedModel, and ``recommend`` (retrieval + this ranker in one graph)
        when the recipe has its retrieval model."""
        paths = super().export(model, base_path, **options)
        if self.retrieval is not None:
            from tfrec_attn.export.ranking import export_recommend

            e = self.config.export
            paths.append(export_recommend(
                self.retrieval.model, self.retrieval.vocabulary, model, self.vocabulary, self.user_encoder, base_path,
                model_name=e.recommend_name, k=e.k, candidates=self.config.retrieval.candidates, because=e.because,
                max_len=self.config.model.max_len, num_ratings=model.network.num_ratings,
                version=options.get("version"), explain_positions=e.explain_positions,
                ranker_retrieval=self._query_retrieval(model)))
        return paths
