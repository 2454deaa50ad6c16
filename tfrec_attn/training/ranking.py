"""The ranking recipe: DIN / BST target attention re-ranking the retrieval model's candidates.

    >>> from tfrec_attn.training.ranking import train_ranking
    >>> result = train_ranking(load_config("training/configs/ml100k_ranking.yaml"),
    ...                        read_movielens("ml-100k"), "runs/ranking")

Training rows are user events of the leave-one-out split's training part (the newest
``train.positions_per_user`` per user): the history before the event (newest
``model.max_len`` items, with their ratings and times), the event's item as the positive,
its rating, and a pool of hard negatives — the retrieval model's top ``loss.hard_pool``
items for that history, the history and the positive excluded. Each epoch draws
``loss.hard_negatives`` from the pool and ``loss.random_negatives`` from the catalogue
(stateless, seeded). Selection: the two-stage NDCG@10 on validation when a retrieval run
is given (``retrieval.run_dir`` or in memory), else validation AUC.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tfrec_attn.data.splits import LeaveOneOutSplit, leave_one_out
from tfrec_attn.features.vocab import ItemVocabulary
from tfrec_attn.layers.ranking_network import NUM_GAP_BUCKETS
from tfrec_attn.training.recipe import Recipe
from tfrec_attn.training.retrieval import training_vocabulary

LOG_NAMES = {"NDCG@10": "ndcg10", "HR@10": "hr10", "AUC": "auc", "RMSE": "rmse"}
RETRIEVAL_BATCH = 64  # users per retrieval pass when mining hard negatives


@dataclasses.dataclass
class EventRows:
    """Ranking rows (one per user event), numpy.

    Attributes:
        history: int64 [n, H]. Model indices, oldest first, right-padded with 0.
        ratings: int64 [n, H]. Rating ids (0 = unknown/padding).
        gaps: int64 [n, H]. Time-gap ids (0 = unknown/padding).
        users: int64 [n]. Split user index of each row.
        positive: int64 [n]. The event's item (model index).
        rating: float32 [n]. Its rating (NaN if none).
        pool: int64 [n, P] or None. Hard negatives (model indices, 0 = none).
    """

    history: np.ndarray
    ratings: np.ndarray
    gaps: np.ndarray
    users: np.ndarray
    positive: np.ndarray
    rating: np.ndarray
    pool: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.positive)


def history_arrays(histories, timestamps, ratings, width: int, num_ratings: int):
    """Right-padded ``[n, width]`` model-index histories (newest ``width`` of each) with their
    rating and time-gap ids (:mod:`tfrec_attn.features.ranking`)."""
    from tfrec_attn.features.ranking import event_gap_ids, event_rating_ids

    n = len(histories)
    ids = np.zeros((n, width), np.int64)
    times = np.zeros((n, width), np.int64)
    values = np.full((n, width), np.nan, np.float32)
    for row, (h, t, r) in enumerate(zip(histories, timestamps, ratings)):
        h = np.asarray(h)[-width:]
        ids[row, :len(h)] = h
        times[row, :len(h)] = np.asarray(t)[-width:]
        values[row, :len(h)] = np.asarray(r)[-width:]
    valid = ids > 0
    gaps = event_gap_ids(times, valid, NUM_GAP_BUCKETS).numpy() if n else np.zeros((0, width), np.int64)
    rating_ids = event_rating_ids(values, num_ratings).numpy() if n else np.zeros((0, width), np.int64)
    return ids, np.where(valid, rating_ids, 0), np.where(valid, gaps, 0)


class RankingRecipe(Recipe):
    """Target-attention ranking on the leave-one-out split.

    Args:
        config: RankingConfig.
        dataset: Dataset (item metadata, user features).
        split: LeaveOneOutSplit (default: the dataset's, as retrieval splits it).
        retrieval: :class:`~tfrec_attn.evaluation.two_stage.Retriever` of a trained
            retrieval model (test candidates), or None to load ``config.retrieval.run_dir``
            (or to train without hard negatives nor two-stage metrics).
        selection_retrieval: Retriever trained without the validation targets (validation
            candidates and hard negatives); default: the run's ``best`` checkpoint, else
            ``retrieval``.
    """

    name = "ranking"

    def __init__(self, config, dataset, split: LeaveOneOutSplit | None = None, retrieval=None,
                 selection_retrieval=None):
        self.config = config
        self.data = dataset
        self.split = split or leave_one_out(dataset.interactions, config.data.min_interactions)
        self.retrieval = retrieval
        self.selection_retrieval = selection_retrieval
        if retrieval is None and config.retrieval.run_dir:
            self.retrieval, self.selection_retrieval = load_retrieval_run(config.retrieval.run_dir, dataset,
                                                                          self.split)
        self.selection_retrieval = self.selection_retrieval or self.retrieval
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

    # -- preparation ---------------------------------------------------------------------
    def prepare(self, output_dir):
        from tfrec_attn.features.ranking import UserFeatureEncoder, item_feature_table

        c = self.config
        self.vocabulary = training_vocabulary(self.split)
        self.user_encoder = UserFeatureEncoder.from_dataset(self.data)
        users = getattr(self.data, "users", None) or {}
        from tfrec_attn.data.dataset import User

        self.user_ids = self.user_encoder.encode([users.get(u) or User(u) for u in self.split.user_ids])
        text = None
        if c.model.text_features:
            text = self._text_table()
        if c.model.item_features or text is not None:
            table = item_feature_table(self.data, self.vocabulary)
            if not c.model.item_features:
                table = table[:, :0]
            self.item_features = table if text is None else np.concatenate([table, text], axis=1)
        train = np.concatenate(self.split.train_part("ratings", True))
        train = train[np.isfinite(train)]
        self.rating_range = (float(train.min()), float(train.max()), float(train.mean())) if len(train) \
            else (1.0, 5.0, 3.5)
        if self.rating_range[0] >= self.rating_range[1]:
            self.rating_range = (self.rating_range[0], self.rating_range[0] + 1.0, self.rating_range[0] + 0.5)
        if output_dir:
            self.vocabulary.save(os.path.join(output_dir, "vocab", "items.txt"))
            self.user_encoder.save(os.path.join(output_dir, "vocab", "user_features.json"))

    def _text_table(self):
        from tfrec_attn.text.features import text_features
        from tfrec_attn.training.config import ItemTowerConfig
        from tfrec_attn.training.retrieval import catalogue_texts

        tower = ItemTowerConfig(type="text", encoder=self.config.model.encoder)
        features = text_features(tower, catalogue_texts(self.config, self.data, self.split), progress=False)
        table = np.zeros((self.vocabulary.num_indices, features.shape[1]), np.float32)
        to_model = self.vocabulary.model_indices(self.split.item_vocab)
        known = self.vocabulary.is_item(to_model)
        table[to_model[known]] = features[known]
        return table

    @property
    def num_ratings(self) -> int:
        return int(round(self.rating_range[1])) if self.config.model.rating_embeddings else 0

    def build_model(self, static_shapes=False):
        from tfrec_attn.models.ranking import build_ranking_model

        model = build_ranking_model(self.config.model, self.config.loss, self.vocabulary.num_indices,
                                    item_features=self.item_features, user_feature_sizes=self.user_encoder.sizes,
                                    rating_range=self.rating_range)
        if self.config.model.init_from_retrieval and self.selection_retrieval is not None:
            table = model.network.items.ids.embeddings
            table.assign(retrieval_item_init(self.selection_retrieval, self.vocabulary, table.numpy()))
        return model

    # -- training rows ---------------------------------------------------------------------
    def rows(self, include_validation: bool = False) -> EventRows:
        """The training rows (cached): the newest ``train.positions_per_user`` events of every
        user's training part, each with the history before it."""
        if include_validation in self._rows:
            return self._rows[include_validation]
        c = self.config
        to_model = self.vocabulary.model_indices(self.split.item_vocab)
        keep = c.train.positions_per_user
        histories, times, values, users, positive, rating = [], [], [], [], [], []
        parts = zip(self.split.train_part("sequences", include_validation),
                    self.split.train_part("timestamps", include_validation),
                    self.split.train_part("ratings", include_validation))
        for user, (seq, ts, rt) in enumerate(parts):
            first = 1 if not keep else max(1, len(seq) - keep)
            for t in range(first, len(seq)):
                lo = max(0, t - c.model.max_len)
                histories.append(to_model[seq[lo:t]])
                times.append(ts[lo:t])
                values.append(rt[lo:t])
                users.append(user)
                positive.append(to_model[seq[t]])
                rating.append(rt[t])
        ids, rating_ids, gaps = history_arrays(histories, times, values, c.model.max_len, self.num_ratings)
        rows = EventRows(ids, rating_ids, gaps, np.asarray(users, np.int64), np.asarray(positive, np.int64),
                         np.asarray(rating, np.float32))
        if c.loss.interaction_weight and c.loss.hard_negatives and self.selection_retrieval is not None:
            rows.pool = self._hard_pool(include_validation, rows)
        self._rows[include_validation] = rows
        return rows

    def _hard_pool(self, include_validation, rows: EventRows) -> np.ndarray:
        """Per row, the retrieval model's top ``loss.hard_pool`` items for the row's history
        (catalogue order of scores; the history and the positive excluded), as model indices."""
        import tensorflow as tf

        model, vocabulary = self.selection_retrieval.model, self.selection_retrieval.vocabulary
        # A small catalogue caps the pool; slots of seen items stay 0 (empty: a random negative instead).
        pool_size = min(self.config.loss.hard_pool, len(vocabulary) - 1)
        to_ranker = self.vocabulary.model_indices(vocabulary.item_ids)  # retrieval table row -> ranker index
        to_retrieval = vocabulary.model_indices(self.split.item_vocab)  # catalogue -> retrieval index
        seqs = self.split.train_part("sequences", include_validation)
        out = np.zeros((len(rows), max(pool_size, 1)), np.int64)
        # Rows are grouped by user, oldest event first: one retrieval pass per user reads the
        # newest `max_len` items before the user's last event and serves every row of it.
        starts = np.flatnonzero(np.r_[True, rows.users[1:] != rows.users[:-1]])
        ends = np.r_[starts[1:], len(rows)]
        width = model.max_len
        table = tf.cast(model.item_embeddings(), tf.float32)
        for lo in range(0, len(starts), RETRIEVAL_BATCH):
            group = list(zip(starts[lo:lo + RETRIEVAL_BATCH], ends[lo:lo + RETRIEVAL_BATCH]))
            batch = np.zeros((len(group), width), np.int64)
            offsets = []
            users = [to_retrieval[seqs[rows.users[s]]] for s, _ in group]  # retrieval indices
            for b, seq in enumerate(users):
                window = seq[max(0, len(seq) - 1 - width):len(seq) - 1]
                batch[b, :len(window)] = window
                offsets.append(len(seq) - 1 - len(window))  # sequence index of window[0]
            sequence = model.encode(tf.constant(batch))["sequence"]
            queries = tf.cast(model._query(sequence), tf.float32)
            scores = tf.einsum("bwd,vd->bwv", queries, table).numpy()
            for b, ((s, e), seq) in enumerate(zip(group, users)):
                first = len(seq) - (e - s)
                for r, t in enumerate(range(first, len(seq))):
                    # History = seq[:t]; the query after seq[t - 1] sits at window index t - 1 - offset.
                    position = max(t - 1 - offsets[b], 0)
                    row_scores = scores[b, position].copy()
                    seen = vocabulary.table_rows(seq[:t + 1])
                    row_scores[seen[seen >= 0]] = -np.inf
                    top = np.argpartition(-row_scores, pool_size)[:pool_size]
                    out[s + r, :pool_size] = np.where(np.isfinite(row_scores[top]), to_ranker[top], 0)
        out[out < 2] = 0
        return out

    def num_examples(self, include_validation=False):
        return len(self.rows(include_validation))

    def dataset(self, input_context, include_validation=False, repeat=True):
        import tensorflow as tf

        c = self.config
        rows = self.rows(include_validation)
        hard = c.loss.hard_negatives if rows.pool is not None else 0
        random = c.loss.random_negatives + (c.loss.hard_negatives - hard)
        if not c.loss.interaction_weight:
            hard = random = 0
        first_item, last_item = 2, self.vocabulary.num_indices  # random negatives: [2, num_indices)
        tensors = {"history": rows.history, "history_ratings": rows.ratings, "history_gaps": rows.gaps,
                   "user_features": self.user_ids[rows.users], "positive": rows.positive, "rating": rows.rating}
        if hard:
            tensors["pool"] = rows.pool
        ds = tf.data.Dataset.from_tensor_slices(tensors)
        if input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        ds = ds.shuffle(len(rows), seed=self.config.seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        dropout = c.model.event_feature_dropout
        span = last_item - first_item

        def make(features, seed):
            # Per example (keyed on its place in the stream), so the draws do not depend on how
            # the global batch is split over replicas: N replicas train what one device trains.
            seed = tf.cast(seed, tf.int64)
            positive = features["positive"][tf.newaxis]
            parts = [positive]
            if hard:
                pool = features["pool"]
                take = tf.random.stateless_uniform([hard], seed, 0, tf.shape(pool)[0], tf.int32)
                parts.append(tf.gather(pool, take))
            if random:
                parts.append(tf.random.stateless_uniform([random], seed + 1, first_item, last_item, tf.int64))
            negatives = tf.concat(parts, axis=0)[1:]
            # A drawn negative that is the positive (or an empty pool slot) becomes another item.
            wrong = (negatives == positive) | (negatives < first_item)
            shifted = (negatives - first_item + 1) % span + first_item
            shifted = tf.where(shifted == positive, (shifted - first_item + 1) % span + first_item, shifted)
            candidates = tf.concat([positive, tf.where(wrong, shifted, negatives)], axis=0)
            keep = tf.random.stateless_uniform([], seed + 2) >= dropout  # keep the event features?
            inputs = {"history": features["history"], "candidates": candidates,
                      "history_ratings": tf.where(keep, features["history_ratings"], 0),
                      "history_gaps": tf.where(keep, features["history_gaps"], 0),
                      "user_features": features["user_features"]}
            clicks = tf.one_hot(0, tf.shape(candidates)[0])
            return inputs, {"clicks": clicks, "rating": features["rating"]}

        seeds = tf.data.Dataset.random(seed=self.config.seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(input_context.get_per_replica_batch_size(c.train.batch_size), drop_remainder=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    # -- evaluation ------------------------------------------------------------------------
    def stage_inputs(self, stage: str, users=None):
        """Network inputs (without candidates) for the evaluated users' ``stage`` histories."""
        evaluated = self.split.evaluated if users is None else users
        position = {"validation": 2, "test": 1}[stage]
        to_model = self.vocabulary.model_indices(self.split.item_vocab)
        width = self.config.model.max_len
        histories = [to_model[self.split.sequences[u][:-position]] for u in evaluated]
        times = [self.split.timestamps[u][:-position] for u in evaluated]
        values = [self.split.ratings[u][:-position] for u in evaluated]
        ids, ratings, gaps = history_arrays(histories, times, values, width, self.num_ratings)
        return {"history": ids, "history_ratings": ratings, "history_gaps": gaps,
                "user_features": self.user_ids[evaluated]}

    def validation_metrics(self, model):
        from tfrec_attn.evaluation.two_stage import evaluate_two_stage

        # The blend weight is chosen here, with the retrieval model that never saw validation
        # targets, and saved with the epoch's weights.
        metrics = evaluate_two_stage(self, model, "validation", self.selection_retrieval, choose_weight=True)
        return {f"val_{short}": metrics.get(name, float("nan")) for name, short in LOG_NAMES.items()}

    def test_metrics(self, model):
        from tfrec_attn.evaluation.two_stage import evaluate_two_stage

        return evaluate_two_stage(self, model, "test", self.retrieval)

    def export(self, model, base_path, **options):
        return export_ranking_model(self.config, model, self.vocabulary, self.user_encoder, base_path,
                                    model_name=options.get("model_name"), version=options.get("version"))

    def export_recommend(self, model, base_path, version: int | None = None) -> str:
        """Writes the ``recommend`` SavedModel (retrieval + this ranker); returns its directory."""
        if self.retrieval is None:
            raise ValueError("the recommend export chains a retrieval model: set retrieval.run_dir")
        return export_recommend_model(self.config, self.retrieval.model, self.retrieval.vocabulary, model,
                                      self.vocabulary, self.user_encoder, base_path, version=version)


def export_ranking_model(config, model, vocabulary: ItemVocabulary, user_encoder, base_path: str, *,
                         model_name: str | None = None, version: int | None = None) -> str:
    """The ranking SavedModel of a trained model with the run config's export settings."""
    from tfrec_attn.export.ranking import export_ranking

    return export_ranking(model, vocabulary, user_encoder, base_path, model_name=model_name or config.export.model_name,
                          max_len=config.model.max_len, num_ratings=model.network.num_ratings, version=version)


def export_recommend_model(config, retrieval_model, retrieval_vocabulary: ItemVocabulary, model,
                           vocabulary: ItemVocabulary, user_encoder, base_path: str, *,
                           version: int | None = None) -> str:
    """The ``recommend`` SavedModel (retrieval + ranking) with the run config's export settings."""
    from tfrec_attn.export.ranking import export_recommend

    e = config.export
    return export_recommend(retrieval_model, retrieval_vocabulary, model, vocabulary, user_encoder, base_path,
                            model_name=e.recommend_name, k=e.k, candidates=config.retrieval.candidates,
                            because=e.because, max_len=config.model.max_len,
                            num_ratings=model.network.num_ratings, version=version)


def retrieval_item_init(retrieval, vocabulary: ItemVocabulary, table: np.ndarray) -> np.ndarray:
    """``table`` (the ranker's id embeddings, [num_indices, d]) with the rows of the items the
    retrieval model knows replaced by its item vectors — projected on their top ``d``
    principal directions when its width differs — rescaled to ``table``'s initial spread."""
    vectors = np.asarray(retrieval.model.item_embeddings(), np.float32)  # retrieval table rows
    vectors = vectors - vectors.mean(axis=0)
    width = table.shape[1]
    if vectors.shape[1] != width:
        _, _, directions = np.linalg.svd(vectors, full_matrices=False)
        vectors = vectors @ directions[:width].T
        if vectors.shape[1] < width:
            vectors = np.pad(vectors, ((0, 0), (0, width - vectors.shape[1])))
    vectors *= table.std() / max(float(vectors.std()), 1e-12)
    rows = vocabulary.model_indices(retrieval.vocabulary.item_ids)
    out = table.copy()
    known = rows >= 2
    out[rows[known]] = vectors[known]
    return out


def comparison_rows(metrics: dict) -> dict:
    """``{row name: metrics}`` of a two-stage evaluation for ``format_table``: retrieval
    alone, the ranker alone on the retrieval candidates, and the two-stage order."""
    rows = {}
    for title, prefix in (("retrieval only", "retrieval_"), ("ranker only", "ranker_only_"), ("two-stage", "")):
        if prefix:
            row = {name[len(prefix):]: value for name, value in metrics.items() if name.startswith(prefix)}
        else:
            row = {name: value for name, value in metrics.items() if name in ("HR@10", "NDCG@10", "HR@50", "MRR")}
        if row:
            rows[title] = row
    return rows


def load_retrieval_run(run_dir: str, dataset, split: LeaveOneOutSplit):
    """(final, best) :class:`~tfrec_attn.evaluation.two_stage.Retriever` of a retrieval run
    directory on disk (:func:`run_retrievers`)."""
    from tfrec_attn.models import load_model
    from tfrec_attn.training.config import ConfigError, load_config

    if not os.path.isfile(os.path.join(run_dir, "model.json")):
        raise ConfigError(f"retrieval.run_dir={run_dir!r}: not a finished retrieval run (no model.json); "
                          "train one with `tfrec-attn train training/configs/ml100k_retrieval.yaml`")
    config = load_config(os.path.join(run_dir, "config.yaml"))
    vocabulary = ItemVocabulary.load(os.path.join(run_dir, "vocab", "items.txt"))
    return run_retrievers(run_dir, config, dataset, split, vocabulary, load_model(run_dir))


def run_retrievers(run_dir: str, config, dataset, split: LeaveOneOutSplit, vocabulary: ItemVocabulary, final):
    """(final, best) Retrievers of a retrieval run: ``final`` (its returned model) gives the test
    candidates; the selection checkpoint ``run_dir/checkpoints/best`` (trained without the
    validation targets; ``final`` when absent) the validation candidates and the hard
    negatives. A text or hybrid tower scores unknown items from the catalogue's texts."""
    from tfrec_attn.evaluation.two_stage import Retriever
    from tfrec_attn.models import load_model
    from tfrec_attn.training.retrieval import catalogue_text_features, catalogue_texts

    features = texts = None
    if config.model.item_tower.type != "id":
        texts = catalogue_texts(config, dataset, split)
        features = catalogue_text_features(config, dataset, split, progress=False)
    best = final
    if os.path.isfile(os.path.join(run_dir, "checkpoints", "best.index")):
        best = load_model(run_dir, os.path.join("checkpoints", "best"))
    return Retriever(final, vocabulary, features, texts), Retriever(best, vocabulary, features, texts)


def export_ranking_run(run_dir: str, base_path: str, version: int | None = None) -> list[str]:
    """Exports a finished ranking run directory (``model.json`` + ``checkpoints/final``): the
    ranking model, and ``recommend`` when its ``retrieval.run_dir`` holds a finished run."""
    from tfrec_attn.features.ranking import UserFeatureEncoder
    from tfrec_attn.models import load_model
    from tfrec_attn.training.config import load_config
    from tfrec_attn.training.retrieval import load_run

    config = load_config(os.path.join(run_dir, "config.yaml"))
    vocabulary = ItemVocabulary.load(os.path.join(run_dir, "vocab", "items.txt"))
    encoder = UserFeatureEncoder.load(os.path.join(run_dir, "vocab", "user_features.json"))
    model = load_model(run_dir)
    paths = [export_ranking_model(config, model, vocabulary, encoder, base_path, version=version)]
    retrieval_dir = config.retrieval.run_dir
    if retrieval_dir and os.path.isfile(os.path.join(retrieval_dir, "model.json")):
        _, retrieval_vocabulary, retrieval = load_run(retrieval_dir)
        paths.append(export_recommend_model(config, retrieval, retrieval_vocabulary, model, vocabulary, encoder,
                                            base_path, version=version))
    return paths


def train_ranking(config, dataset, output_dir: str, *, verbose: int = 1, evaluate_test: bool = True,
                  split: LeaveOneOutSplit | None = None, retrieval=None, selection_retrieval=None, strategy=None):
    """Trains the ranking recipe with the engine (selection, optional refit, report).

    Returns:
        TrainResult with ``model``, ``vocabulary``, ``split``, ``metrics`` and ``recipe``.
    """
    from tfrec_attn.training.engine import Trainer

    recipe = RankingRecipe(config, dataset, split, retrieval, selection_retrieval)
    result = Trainer(recipe, config, output_dir, verbose=verbose, strategy=strategy).run(evaluate_test=evaluate_test)
    result.vocabulary = recipe.vocabulary
    result.split = recipe.split
    result.recipe = recipe
    return result


