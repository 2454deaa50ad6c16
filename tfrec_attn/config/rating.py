"""The rating recipe's config (``recipe: rating``): the ranking network's rating head alone,
trained and measured on a rating split (ML-100K's GroupLens fold ``u1``: RMSE / MAE as in the
literature). The network and training sections are the ranking recipe's; the loss is the
rating loss alone, and ``split`` says which ratings train and which test."""

from __future__ import annotations

import dataclasses

from tfrec_attn.config.ranking import RankingModelConfig, RankingTrainConfig
from tfrec_attn.config.registry import register_config
from tfrec_attn.config.sections import DataConfig, RunConfig, Section


@dataclasses.dataclass
class RatingSplitConfig(Section):
    """Which ratings train and which test; the selection hold-out."""

    fold: int = 1  # GroupLens fold u1..u5 of ML-100K's u.data (u1: the benchmark)
    validation_fraction: float = 0.05  # of the training ratings, held out to select the epoch
    validation_seed: int = 0  # fixed apart from `seed`: every seed is selected on the same ratings

    def checks(self, at):
        return [("fold", 1 <= self.fold <= 5, "must be in 1..5 (u1..u5)"),
                ("validation_fraction", 0.0 < self.validation_fraction < 1.0, "must be in (0, 1)")]


@dataclasses.dataclass
class RatingLossConfig(Section):
    rating_weight: float = 1.0

    def checks(self, at):
        return [("rating_weight", self.rating_weight > 0, "must be > 0")]

    # what the ranking network's model reads of a loss section: no interaction head
    interaction = "listwise"
    interaction_weight = 0.0
    hard_negatives = 0
    random_negatives = 0
    distillation_weight = 0.0
    distillation_temperature = 1.0


@register_config("rating")
@dataclasses.dataclass
class RatingConfig(RunConfig):
    recipe: str = "rating"
    seed: int = 42
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    split: RatingSplitConfig = dataclasses.field(default_factory=RatingSplitConfig)
    model: RankingModelConfig = dataclasses.field(default_factory=RankingModelConfig)
    loss: RatingLossConfig = dataclasses.field(default_factory=RatingLossConfig)
    train: RankingTrainConfig = dataclasses.field(default_factory=RankingTrainConfig)

    def checks(self, at):
        return super().checks(at) + [
            ("model.text_features", not self.model.text_features, "is not supported by the rating recipe"),
            ("model.retrieval_score", not self.model.retrieval_score,
             "is not supported by the rating recipe (it has no retrieval run)")]
