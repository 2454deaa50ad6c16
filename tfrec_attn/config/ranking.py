"""The ranking recipe's config (``recipe: ranking``): the target-attention network, its
losses and negatives, the retrieval run it re-ranks, and its exports. It shares ``data`` and
``train`` with every recipe (the same engine trains it); its own defaults live here, once."""

from __future__ import annotations

import dataclasses

from tfrec_attn.config.registry import register_config
from tfrec_attn.config.sections import DataConfig, RunConfig, Section, TrainConfig, one_of
from tfrec_attn.text.defaults import DEFAULT_ENCODER


@dataclasses.dataclass
class RankingModelConfig(Section):
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
    encoder: str = DEFAULT_ENCODER
    rating_embeddings: bool = True  # each history event's rating
    time_embeddings: bool = True  # each history event's time before the newest one
    user_features: bool = True  # age, gender, occupation, zip (when the data has them)
    event_feature_dropout: float = 0.5  # train rows without ratings/times, as serving by ids sees them
    # start the item id embeddings from the retrieval model's (its selection checkpoint; projected
    # on their top principal components when the widths differ)
    init_from_retrieval: bool = False
    # What retrieval knows (``retrieval.run_dir``'s selection checkpoint, frozen inside the
    # ranker and its exports): each candidate's retrieval score, added to the logit with a
    # learned scale and fed to the MLP; with retrieval_embeddings also the user's query and the
    # candidate's retrieval vectors (projected).
    retrieval_score: bool = False
    retrieval_embeddings: bool = False
    popularity: bool = False  # + each item's log training count (an item feature)
    # the rating head corrects mean + item bias + the user's bias read from the history's ratings
    rating_biases: bool = False

    def checks(self, at):
        from tfrec_attn.layers.target_attention import DIN_NORMALIZATIONS, TARGET_ATTENTION_TYPES

        return [
            ("attention", self.attention in TARGET_ATTENTION_TYPES, one_of(TARGET_ATTENTION_TYPES)),
            ("normalization", self.normalization in DIN_NORMALIZATIONS, one_of(DIN_NORMALIZATIONS)),
            ("embedding_dim", self.embedding_dim > 0, "must be > 0"),
            ("max_len", self.max_len > 0, "must be > 0"),
            ("num_heads", self.num_heads > 0 and self.embedding_dim % self.num_heads == 0,
             f"must divide {at('embedding_dim')}={self.embedding_dim}"),
            ("num_blocks", self.num_blocks >= 1, "must be >= 1"),
            ("attention_units", all(u > 0 for u in self.attention_units), "must be positive widths"),
            ("mlp_units", all(u > 0 for u in self.mlp_units), "must be positive widths"),
            ("dropout", 0.0 <= self.dropout < 1.0, "must be in [0, 1)"),
            ("event_feature_dropout", 0.0 <= self.event_feature_dropout <= 1.0, "must be in [0, 1]"),
            ("rating_biases", self.rating_embeddings or not self.rating_biases,
             f"needs {at('rating_embeddings')}=true (the user's bias is read from the history's ratings)"),
            ("retrieval_embeddings", self.retrieval_score or not self.retrieval_embeddings,
             f"needs {at('retrieval_score')}=true (the vectors come with the score)"),
        ]


@dataclasses.dataclass
class RankingLossConfig(Section):
    interaction: str = "listwise"  # listwise (softmax over the candidate list) | pointwise (BCE)
    interaction_weight: float = 1.0
    rating_weight: float = 0.5
    hard_negatives: int = 10  # per positive, from the retrieval model's top `hard_pool`
    hard_pool: int = 100
    random_negatives: int = 10  # per positive, uniform over the catalogue
    # + distillation_weight * cross-entropy of the ranker's list softmax against the retrieval
    # scores' (softmax at distillation_temperature) over the same candidates (model.retrieval_score)
    distillation_weight: float = 0.0
    distillation_temperature: float = 1.0

    def checks(self, at):
        from tfrec_attn.models.ranking import INTERACTION_LOSSES

        return [
            ("interaction", self.interaction in INTERACTION_LOSSES, one_of(INTERACTION_LOSSES)),
            ("interaction_weight", self.interaction_weight >= 0, "must be >= 0"),
            ("rating_weight", self.rating_weight >= 0, "must be >= 0"),
            ("rating_weight", self.rating_weight + self.interaction_weight > 0,
             f"and {at('interaction_weight')} cannot both be 0"),
            ("hard_negatives", self.hard_negatives >= 0, "must be >= 0"),
            ("random_negatives", self.random_negatives >= 0, "must be >= 0"),
            ("random_negatives",
             self.interaction_weight == 0 or self.hard_negatives + self.random_negatives > 0,
             f"and {at('hard_negatives')} cannot both be 0 with an interaction loss"),
            ("hard_pool", self.hard_pool >= self.hard_negatives, f"must be >= {at('hard_negatives')}"),
            ("distillation_weight", self.distillation_weight >= 0, "must be >= 0"),
            ("distillation_temperature", self.distillation_temperature > 0, "must be > 0"),
        ]


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

    def checks(self, at):
        return super().checks(at) + [
            ("positions_per_user", self.positions_per_user >= 0, "must be >= 0 (0 = all)")]


@dataclasses.dataclass
class RetrievalSourceConfig(Section):
    """The retrieval run whose candidates the ranker re-orders (hard negatives, two-stage
    evaluation). Empty: random negatives only, and selection on validation AUC."""

    run_dir: str = ""
    candidates: int = 100  # retrieval top-K re-ranked
    # With model.retrieval_score: the ranker trains on each user's newest holdout_events
    # training events, and reads a retrieval model trained again (run_dir's config) without
    # them, so that its scores of their positives are as honest as of the test targets'
    # (0: read run_dir's selection checkpoint, which trained on the rows).
    holdout_events: int = 0

    def checks(self, at):
        return [("candidates", self.candidates > 0, "must be > 0"),
                ("holdout_events", self.holdout_events == 0 or self.holdout_events >= 2,
                 "must be 0 (off) or >= 2 (the held-out split's validation and test targets)")]


@dataclasses.dataclass
class RankingExportConfig(Section):
    model_name: str = "ranking"
    recommend_name: str = "recommend"  # retrieval + ranking in one graph
    k: int = 10  # recommend: items returned
    because: int = 3  # recommend: history items that explain each (the largest leave-one-out score drops)
    explain_positions: int = 10  # ... among each item's this many history items of largest attention (cost bound)

    def checks(self, at):
        return [("because", self.because > 0, "must be > 0"),
                ("explain_positions", self.explain_positions >= self.because,
                 f"must be >= {at('because')}={self.because} (the explanations are chosen among them)")]


@register_config("ranking")
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

    def checks(self, at):
        return super().checks(at) + [
            ("export.k", 0 < self.export.k <= self.retrieval.candidates,
             f"must be in 1..{at('retrieval.candidates')}={self.retrieval.candidates}"),
            ("loss.distillation_weight", not self.loss.distillation_weight or self.model.retrieval_score,
             f"needs {at('model.retrieval_score')}=true (the retrieval scores it distils)")]
