"""The ranking recipe's configuration (``recipe: ranking`` in a YAML config).

Shares the ``data`` and ``train`` sections with retrieval (the same engine trains both);
its own defaults live here, once.
"""

from __future__ import annotations

import dataclasses

from tfrec_attn.training.config import ConfigError, DataConfig, RunConfig, TrainConfig, _get


@dataclasses.dataclass
class RankingModelConfig:
    """The target-attention network (:class:`tfrec_attn.layers.RankingNetwork`)."""

    attention: str = "din"  # din | bst
    embedding_dim: int = 32
    max_len: int = 50  # newest history events the ranker reads
    attention_units: list[int] = dataclasses.field(default_factory=lambda: [64, 32])  # din activation MLP
    normalization: str = "none"  # din: none (the paper) | softmax
    num_heads: int = 2  # bst
    num_blocks: int = 1  # bst
    mlp_units: list[int] = dataclasses.field(default_factory=lambda: [128, 64])
    history_mean: bool = True  # also feed the MLP the history's mean event (bypasses attention)
    dropout: float = 0.2
    item_features: bool = True  # genres + release decade
    text_features: bool = False  # + the frozen text encoder's item encodings (model.encoder)
    encoder: str = "sentence-transformers/all-MiniLM-L6-v2"
    rating_embeddings: bool = True  # each history event's rating
    time_embeddings: bool = True  # each history event's time before the newest one
    user_features: bool = True  # age, gender, occupation, zip (when the data has them)
    event_feature_dropout: float = 0.5  # train rows without ratings/times, as serving by ids sees them
    # start the item id embeddings from the retrieval model's (its selection checkpoint; projected
    # on their top principal components when the widths differ)
    init_from_retrieval: bool = False


@dataclasses.dataclass
class RankingLossConfig:
    interaction: str = "listwise"  # listwise (softmax over the candidate list) | pointwise (BCE)
    interaction_weight: float = 1.0
    rating_weight: float = 0.5
    hard_negatives: int = 10  # per positive, from the retrieval model's top `hard_pool`
    hard_pool: int = 100
    random_negatives: int = 10  # per positive, uniform over the catalogue


@dataclasses.dataclass
class RankingTrainConfig(TrainConfig):
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    reference_batch_size: int = 128
    patience: int = 3
    positions_per_user: int = 50  # newest training events per user (0 = all)
    steps_per_execution: int = 4
    # The selected epoch's model is the one tested: its blend weight (model.retrieval_weight) is
    # chosen on the validation targets, which a refit would train on.
    refit_with_validation: bool = False


@dataclasses.dataclass
class RetrievalSourceConfig:
    """The retrieval run whose candidates the ranker re-orders (hard negatives, two-stage
    evaluation). Empty: random negatives only, and selection on validation AUC."""

    run_dir: str = ""
    candidates: int = 100  # retrieval top-K re-ranked


@dataclasses.dataclass
class RankingExportConfig:
    model_name: str = "ranking"
    recommend_name: str = "recommend"  # retrieval + ranking in one graph
    k: int = 10  # recommend: items returned
    because: int = 3  # recommend: history items that explain each


@dataclasses.dataclass
class RankingConfig(RunConfig):
    recipe: str = "ranking"
    seed: int = 42
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    retrieval: RetrievalSourceConfig = dataclasses.field(default_factory=RetrievalSourceConfig)
    model: RankingModelConfig = dataclasses.field(default_factory=RankingModelConfig)
    loss: RankingLossConfig = dataclasses.field(default_factory=RankingLossConfig)
    train: RankingTrainConfig = dataclasses.field(default_factory=RankingTrainConfig)
    export: RankingExportConfig = dataclasses.field(default_factory=RankingExportConfig)

    def validate(self, where=lambda path: path) -> None:
        """Raises :class:`ConfigError` naming the value's origin (``where(path)``)."""
        from tfrec_attn.layers.target_attention import DIN_NORMALIZATIONS, TARGET_ATTENTION_TYPES
        from tfrec_attn.models.ranking import INTERACTION_LOSSES
        from tfrec_attn.training.config import RetrievalConfig

        self.where = where
        # The shared sections are checked by the retrieval config's rules.
        shared = RetrievalConfig(seed=self.seed, data=self.data, train=self.train)
        shared.validate(where)
        m, loss = self.model, self.loss

        def one_of(choices):
            return f"must be one of {', '.join(choices)}"

        checks = [
            ("recipe", self.recipe == "ranking", "must be ranking"),
            ("model.attention", m.attention in TARGET_ATTENTION_TYPES, one_of(TARGET_ATTENTION_TYPES)),
            ("model.normalization", m.normalization in DIN_NORMALIZATIONS, one_of(DIN_NORMALIZATIONS)),
            ("model.embedding_dim", m.embedding_dim > 0, "must be > 0"),
            ("model.max_len", m.max_len > 0, "must be > 0"),
            ("model.num_heads", m.num_heads > 0 and m.embedding_dim % m.num_heads == 0,
             f"must divide model.embedding_dim={m.embedding_dim}"),
            ("model.num_blocks", m.num_blocks >= 1, "must be >= 1"),
            ("model.attention_units", all(u > 0 for u in m.attention_units), "must be positive widths"),
            ("model.mlp_units", all(u > 0 for u in m.mlp_units), "must be positive widths"),
            ("model.dropout", 0.0 <= m.dropout < 1.0, "must be in [0, 1)"),
            ("model.event_feature_dropout", 0.0 <= m.event_feature_dropout <= 1.0, "must be in [0, 1]"),
            ("loss.interaction", loss.interaction in INTERACTION_LOSSES, one_of(INTERACTION_LOSSES)),
            ("loss.interaction_weight", loss.interaction_weight >= 0, "must be >= 0"),
            ("loss.rating_weight", loss.rating_weight >= 0, "must be >= 0"),
            ("loss.rating_weight", loss.rating_weight + loss.interaction_weight > 0,
             "and loss.interaction_weight cannot both be 0"),
            ("loss.hard_negatives", loss.hard_negatives >= 0, "must be >= 0"),
            ("loss.random_negatives", loss.random_negatives >= 0, "must be >= 0"),
            ("loss.random_negatives", loss.interaction_weight == 0 or loss.hard_negatives + loss.random_negatives > 0,
             "and loss.hard_negatives cannot both be 0 with an interaction loss"),
            ("loss.hard_pool", loss.hard_pool >= loss.hard_negatives, "must be >= loss.hard_negatives"),
            ("train.positions_per_user", self.train.positions_per_user >= 0, "must be >= 0 (0 = all)"),
            ("retrieval.candidates", self.retrieval.candidates > 0, "must be > 0"),
            ("export.k", 0 < self.export.k <= self.retrieval.candidates,
             f"must be in 1..retrieval.candidates={self.retrieval.candidates}"),
            ("export.because", self.export.because > 0, "must be > 0"),
        ]
        for path, ok, problem in checks:
            if not ok:
                raise ConfigError(f"{where(path)}: {path}={_get(self, path)!r} {problem}")

