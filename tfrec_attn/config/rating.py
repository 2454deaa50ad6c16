"""The rating recipe's config (``recipe: rating``): the ranking network's rating head alone,
trained and measured on a rating split (ML-100K's GroupLens fold ``u1``: RMSE / MAE as in the
literature). The network and training sections are the ranking recipe's; the loss is the
rating loss alone, and ``split`` says which ratings train and which test."""

from __future__ import annotations

import dataclasses

from tfrec_attn.config.ranking import RankingModelConfig, RankingTrainConfig
from tfrec_attn.config.registry import register_config
from tfrec_attn.config.sections import DataConfig, RunConfig, Section, TrainConfig


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


@dataclasses.dataclass
class KernelAutoencoderModelConfig(Section):
    """GLocal-K's network (:class:`~tfrec_attn.models.rating_autoencoder.KernelRatingAutoencoder`);
    the defaults are the paper's for ML-100K."""

    hidden_units: int = 500
    hidden_layers: int = 2
    kernel_dim: int = 5  # the local kernels' points
    l2: float = 20.0  # weight penalty of each layer (lambda_2)
    sparsity: float = 0.006  # kernel penalty of each layer (lambda_s)
    global_kernel: bool = True  # fine-tune on the matrix convolved with the global kernel
    global_kernel_size: int = 3
    dot_scale: float = 1.0
    # identity + the learned filter, from 0: fine-tuning starts at the pre-trained model (false:
    # GLocal-K's random filter, which Adam's first steps pay for; docs/benchmarks.md)
    residual_kernel: bool = True
    pretrain_epochs: int = 50  # epochs of the local-kernel autoencoder before the global kernel joins

    def checks(self, at):
        return [("hidden_units", self.hidden_units > 0, "must be > 0"),
                ("hidden_layers", self.hidden_layers > 0, "must be > 0"),
                ("kernel_dim", self.kernel_dim > 0, "must be > 0"),
                ("l2", self.l2 >= 0, "must be >= 0"),
                ("sparsity", self.sparsity >= 0, "must be >= 0"),
                ("global_kernel_size", self.global_kernel_size > 0 and self.global_kernel_size % 2 == 1,
                 "must be a positive odd number"),
                ("pretrain_epochs", self.pretrain_epochs >= 0, "must be >= 0")]


@dataclasses.dataclass
class KernelAutoencoderTrainConfig(TrainConfig):
    epochs: int = 120
    batch_size: int = 4096  # items per step; the whole catalogue when it has fewer (GLocal-K: full batch)
    passes_per_epoch: int = 10  # passes over the catalogue per epoch (GLocal-K's optimiser iterations per epoch)
    learning_rate: float = 1e-3
    reference_batch_size: int = 4096
    patience: int = 10
    steps_per_execution: int = 1
    refit_with_validation: bool = True  # only the epoch count comes from validation

    def checks(self, at):
        return super().checks(at) + [("passes_per_epoch", self.passes_per_epoch > 0, "must be > 0")]


@dataclasses.dataclass
class RatingExportConfig(Section):
    """The ``rating`` export (:mod:`tfrec_attn.export.rating`): user id + item ids -> ratings."""

    model_name: str = "rating"


@register_config("kernel_autoencoder")
@dataclasses.dataclass
class KernelAutoencoderConfig(RunConfig):
    """``recipe: kernel_autoencoder``: GLocal-K on a rating split (the ``split`` section and its
    selection hold-out are the rating recipe's, so both select on the same ratings)."""

    recipe: str = "kernel_autoencoder"
    seed: int = 42
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    split: RatingSplitConfig = dataclasses.field(default_factory=RatingSplitConfig)
    model: KernelAutoencoderModelConfig = dataclasses.field(default_factory=KernelAutoencoderModelConfig)
    train: KernelAutoencoderTrainConfig = dataclasses.field(default_factory=KernelAutoencoderTrainConfig)
    export: RatingExportConfig = dataclasses.field(default_factory=RatingExportConfig)

    def checks(self, at):
        return super().checks(at) + [
            ("model.pretrain_epochs", not self.model.global_kernel or self.model.pretrain_epochs < self.train.epochs,
             f"must be < {at('train.epochs')} ({self.train.epochs}) when the global kernel fine-tunes")]
