"""The retrieval recipe's config (``recipe: retrieval``, the default): the transformer user
tower, the item tower, the next-item loss and the export. Every default lives here, once;
``training/configs/ml100k_retrieval.yaml`` names what the ML-100K run sets."""

from __future__ import annotations

import dataclasses

from tfrec_attn.config.registry import register_config
from tfrec_attn.config.sections import DataConfig, RunConfig, Section, TrainConfig, one_of
from tfrec_attn.text.defaults import DEFAULT_ENCODER


@dataclasses.dataclass
class ItemTowerConfig(Section):
    """The item tower (:mod:`tfrec_attn.layers.item_tower`): ``id``, ``text`` or ``hybrid``.

    ``id`` is the default: it needs nothing but interactions, and on ML-100K it is also the
    best on known items (validation and test). ``text`` is the measured choice for items
    never seen in training (cold start); the main job trains both
    (training/configs/ml100k_pipeline.yaml, docs/benchmarks.md)."""

    type: str = "id"
    # text / hybrid: the pretrained BERT (Hugging Face name or local directory) and how it reads
    encoder: str = DEFAULT_ENCODER
    max_tokens: int = 64  # tokens per item text, [CLS] and [SEP] included
    pooling: str = "mean"  # mean | cls
    projection: str = "linear"  # text features -> embedding: linear | mlp
    # hybrid: how the id embedding and the text projection combine
    fusion: str = "sum"  # sum | gated | concat_mlp | subspace (AlphaFuse: frozen text subspace, ids in its null space)
    subspace_dim: int = 0  # fusion=subspace: the frozen text part's width (0 = half of model.embedding_dim)
    whitening: str = "none"  # text / hybrid: none | zca (encodings whitened before the projection: WhitenRec)
    # id / hybrid: random | pca (the id rows start from the principal components of the items' text
    # encodings, LLM2BERT4Rec / LLM-ESR; the encoder is used at initialisation only)
    id_init: str = "random"
    # ensemble: an id model and a `text_part` model (text | hybrid) trained apart, their scores added
    # (tfrec_attn.models.ensemble); the text part trains `text_share` of train.time_budget_seconds
    text_part: str = "text"
    text_share: float = 0.4
    # ensemble: what the new-item offset is fitted on (tfrec_attn.training.ensemble): held_out (a copy
    # of the text part trained without the pseudo-cold items, so they score as new items do) | in_sample
    new_item_calibration: str = "held_out"
    pseudo_cold_fraction: float = 0.2  # ensemble: of the evaluated users, whose validation targets play new items
    id_dropout: float = 0.3  # replace a training item's id by OOV at this rate (learn to embed from text)
    id_dropout_candidates: bool = False  # ... on the candidate side too (cold start; costs some warm accuracy)
    # 0: frozen encoder, catalogue features computed once and cached (fast path);
    # N > 0: fine-tune the encoder's last N layers with their own learning rate
    trainable_layers: int = 0
    encoder_learning_rate: float = 1e-4

    @property
    def reads_text(self) -> bool:
        """Whether this tower embeds items from their text (see :func:`layers.item_tower.reads_text`)."""
        from tfrec_attn.layers.item_tower import reads_text

        return reads_text(self.type)

    @property
    def needs_text_features(self) -> bool:
        """Whether training needs the catalogue's text encodings: a tower that reads text, or an
        id table initialised from them."""
        return self.reads_text or self.id_init == "pca"

    def checks(self, at):
        from tfrec_attn.layers.item_tower import (
            FUSION_TYPES,
            ID_INITS,
            ITEM_TOWER_TYPES,
            PROJECTION_TYPES,
            TEXT_LAYER_TYPES,
            WHITENING_TYPES,
        )
        from tfrec_attn.models.ensemble import NEW_ITEM_CALIBRATIONS
        from tfrec_attn.text import POOLING_TYPES

        return [
            ("type", self.type in ITEM_TOWER_TYPES, one_of(ITEM_TOWER_TYPES)),
            ("max_tokens", self.max_tokens >= 3, "must be >= 3 ([CLS] text [SEP])"),
            ("pooling", self.pooling in POOLING_TYPES, one_of(POOLING_TYPES)),
            ("projection", self.projection in PROJECTION_TYPES, one_of(PROJECTION_TYPES)),
            ("fusion", self.fusion in FUSION_TYPES, one_of(FUSION_TYPES)),
            ("whitening", self.whitening in WHITENING_TYPES, one_of(WHITENING_TYPES)),
            ("whitening", self.whitening == "none" or self.reads_text,
             f"needs a tower that reads text ({at('type')}=text or hybrid)"),
            ("whitening", self.whitening == "none" or not self.trainable_layers,
             f"is fitted once on the frozen encoder's features: set {at('trainable_layers')}=0"),
            ("text_part", self.text_part in TEXT_LAYER_TYPES, one_of(TEXT_LAYER_TYPES)),
            ("text_share", 0.0 < self.text_share < 1.0, "must be in (0, 1)"),
            ("new_item_calibration", self.new_item_calibration in NEW_ITEM_CALIBRATIONS,
             one_of(NEW_ITEM_CALIBRATIONS)),
            ("pseudo_cold_fraction", 0.0 < self.pseudo_cold_fraction < 1.0, "must be in (0, 1)"),
            ("fusion", self.fusion != "subspace" or "hybrid" not in (self.type, self.text_part)
             or self.whitening == "none" and not self.trainable_layers and self.id_init == "random",
             f"is fitted once on the frozen encoder's plain features: needs {at('whitening')}=none, "
             f"{at('trainable_layers')}=0, {at('id_init')}=random"),
            ("subspace_dim", self.subspace_dim >= 0, "must be >= 0 (0 = half of model.embedding_dim)"),
            ("id_init", self.id_init in ID_INITS, one_of(ID_INITS)),
            ("id_init", self.id_init == "random" or self.type != "text",
             f"needs an id table ({at('type')}=id or hybrid); a text tower has none"),
            ("id_dropout", 0.0 <= self.id_dropout < 1.0, "must be in [0, 1)"),
            ("trainable_layers", self.trainable_layers >= 0, "must be >= 0 (0 = frozen)"),
            ("encoder_learning_rate", self.encoder_learning_rate > 0, "must be > 0"),
        ]


@dataclasses.dataclass
class UserTowerConfig(Section):
    """How the user tower's outputs become queries: one vector (``interests: 1``, the
    default: the last position's output), or K interests by self-attentive extraction
    (:mod:`tfrec_attn.models.multi_interest`; an item scores the max over them).

    The defaults of the K > 1 options were chosen on ML-100K's validation split at K = 4
    (docs/benchmarks.md, "Several interests per user"): the most accurate setting whose
    interests do not collapse (mean pairwise cosine <= 0.5)."""

    interests: int = 1
    # how K > 1 interests are read off the history: self_attentive (ComiRec-SA) | capsule (dynamic
    # routing, ComiRec-DR / MIND)
    extraction: str = "self_attentive"
    routing_iterations: int = 3  # capsule: routing rounds
    hidden_dim: int = 0  # self_attentive: the extractor's width (0 = 4 x model.embedding_dim, as ComiRec-SA)
    residual: bool = True  # every interest also carries the one-vector query (the last position's output)
    # which interest learns each target: hard (the closest) | sampled (BaM) | max (every candidate scored
    # by its best interest inside the softmax, as retrieval scores it)
    selection: str = "max"
    selection_temperature: float = 1.0  # sampled: softmax(affinity / temperature)
    diversity_weight: float = 1.0  # x the mean pairwise cosine of a user's interests (against collapse) ...
    diversity_margin: float = 0.5  # ... above this margin (-1: all of it)
    # x the load-balancing loss K sum_k f_k p_k over the targets (Switch Transformer): against an
    # interest that wins no target (0 = none; tfrec_attn/models/multi_interest.py balance_loss)
    balance_weight: float = 0.0
    # how retrieval merges the interests' rankings: max (an item's best interest score) |
    # proportional (the list's slots dealt to the interests by their share of the history, D'Hondt)
    aggregation: str = "max"
    # the interest profile: after training, fit a head that predicts the genre (category)
    # distribution of the user's next 10 items from the interests (tfrec_attn/training/
    # interest_profile.py), kept in RUN/interest_profile/ and served as the `profile` signature
    profile: bool = False
    # a rating-aware history: 0 = the tower reads items only (the default); N = the rating levels
    # (5 for MovieLens' stars): each event's rating (rounded, 1..N) adds a learned embedding to its
    # item's, and the exports' history signatures take `history_ratings` beside `history`
    num_ratings: int = 0
    rating_dropout: float = 0.2  # num_ratings > 0: training hides a sequence's ratings at this rate

    def checks(self, at):
        from tfrec_attn.layers.interests import AGGREGATION_TYPES, EXTRACTION_TYPES
        from tfrec_attn.models.multi_interest import SELECTION_TYPES

        return [
            ("interests", self.interests >= 1, "must be >= 1 (1 = one vector per user)"),
            ("extraction", self.extraction in EXTRACTION_TYPES, one_of(EXTRACTION_TYPES)),
            ("routing_iterations", self.routing_iterations >= 1, "must be >= 1"),
            ("hidden_dim", self.hidden_dim >= 0, "must be >= 0 (0 = 4 x model.embedding_dim)"),
            ("selection", self.selection in SELECTION_TYPES, one_of(SELECTION_TYPES)),
            ("selection_temperature", self.selection_temperature > 0, "must be > 0"),
            ("diversity_weight", self.diversity_weight >= 0, "must be >= 0"),
            ("diversity_margin", -1.0 <= self.diversity_margin < 1.0, "must be in [-1, 1)"),
            ("balance_weight", self.balance_weight >= 0, "must be >= 0"),
            ("aggregation", self.aggregation in AGGREGATION_TYPES, one_of(AGGREGATION_TYPES)),
            ("num_ratings", self.num_ratings >= 0, "must be >= 0 (0 = the history's items only)"),
            ("rating_dropout", 0.0 <= self.rating_dropout < 1.0, "must be in [0, 1)"),
        ]


@dataclasses.dataclass
class ModelConfig(Section):
    """The transformer user tower and the item tower."""

    embedding_dim: int = 64
    max_len: int = 200  # most recent history items the user tower reads
    num_blocks: int = 2
    num_heads: int = 1
    ffn_dim: int = 0  # 0 = embedding_dim
    dropout: float = 0.3
    attention_dropout: float = -1.0  # < 0 = same as dropout
    norm_first: bool = True  # pre-LN (True) or post-LN (False)
    positional: str = "learned"  # learned | none
    scale_embeddings: bool = True  # multiply history item embeddings by sqrt(embedding_dim)
    item_bias: bool = False  # score = user . item + b_item (a learned popularity prior)
    item_tower: ItemTowerConfig = dataclasses.field(default_factory=ItemTowerConfig)
    user_tower: UserTowerConfig = dataclasses.field(default_factory=UserTowerConfig)

    def checks(self, at):
        from tfrec_attn.layers.attention import POSITIONAL_TYPES

        interests = self.user_tower.interests
        return [
            ("user_tower.interests", interests <= self.max_len,
             f"must be <= {at('max_len')}={self.max_len} (each interest attends to the history's positions)"),
            ("user_tower.profile", not self.user_tower.profile or self.item_tower.type != "ensemble",
             f"needs one query space: not {at('item_tower.type')}=ensemble (its parts score apart)"),
            ("user_tower.interests", interests == 1 or self.item_tower.type != "ensemble",
             f"> 1 needs one query space: not {at('item_tower.type')}=ensemble (its parts score apart)"),
            ("embedding_dim", self.embedding_dim > 0, "must be > 0"),
            ("item_tower.subspace_dim", self.item_tower.subspace_dim < self.embedding_dim,
             f"must be below {at('embedding_dim')}={self.embedding_dim} (the ids take the rest)"),
            ("max_len", self.max_len > 0, "must be > 0"),
            ("num_blocks", self.num_blocks >= 0, "must be >= 0"),
            ("num_heads", self.num_heads > 0 and self.embedding_dim % self.num_heads == 0,
             f"must divide {at('embedding_dim')}={self.embedding_dim}"),
            ("dropout", 0.0 <= self.dropout < 1.0, "must be in [0, 1)"),
            ("attention_dropout", self.attention_dropout < 1.0, "must be < 1"),
            ("ffn_dim", self.ffn_dim >= 0, "must be >= 0 (0 = embedding_dim)"),
            ("positional", self.positional in POSITIONAL_TYPES, one_of(POSITIONAL_TYPES)),
        ]


@dataclasses.dataclass
class LossConfig(Section):
    """Next-item prediction objective at every position."""

    type: str = "sampled"  # tfrec_attn.tasks.LOSS_TYPES: full | sampled | in_batch
    num_negatives: int = 2048  # sampled: negatives per step (>= catalogue size: exact full softmax)
    temperature: float = 0.5  # logits / temperature (chosen on validation)
    label_smoothing: float = 0.2  # mass on each query's negatives (chosen on validation)
    sampling_alpha: float = 0.75  # sampled: negatives drawn ~ count**alpha (logQ-corrected)
    max_positions: int = 4096  # in_batch: positions per batch used as queries (memory bound)
    future_window: int = 1  # each position predicts the next `future_window` items (1 = next only)
    future_weight: float = 1.0  # weight of targets beyond the next one
    # full / sampled: REMI's hard negatives, each negative weighted by M * softmax(beta * its logit) in the
    # partition function (0 = the plain softmax)
    hard_negative_beta: float = 0.0

    def checks(self, at):
        from tfrec_attn.tasks.next_item import LOSS_TYPES

        return [
            ("type", self.type in LOSS_TYPES, one_of(LOSS_TYPES)),
            ("num_negatives", self.num_negatives > 0, "must be > 0"),
            ("temperature", self.temperature > 0, "must be > 0"),
            ("label_smoothing", 0.0 <= self.label_smoothing < 1.0, "must be in [0, 1)"),
            ("sampling_alpha", 0.0 <= self.sampling_alpha <= 1.0, "must be in [0, 1]"),
            ("max_positions", self.max_positions > 0, "must be > 0"),
            ("future_window", self.future_window >= 1, "must be >= 1"),
            ("future_weight", self.future_weight >= 0, "must be >= 0"),
            ("hard_negative_beta", self.hard_negative_beta >= 0, "must be >= 0 (0 = the plain softmax)"),
            ("hard_negative_beta", not self.hard_negative_beta or self.type != "in_batch",
             f"needs {at('type')}=full or sampled (tfrs' in-batch task has no negative weights)"),
        ]


@dataclasses.dataclass
class ExportConfig(Section):
    k: int = 100
    index: str = "brute_force"  # brute_force (TF Serving) | scann (needs `import scann`)
    model_name: str = "retrieval"

    def checks(self, at):
        from tfrec_attn.export.index import INDEX_TYPES

        return [("k", self.k > 0, "must be > 0"),
                ("index", self.index in INDEX_TYPES, one_of(INDEX_TYPES))]


@register_config("retrieval")
@dataclasses.dataclass
class RetrievalConfig(RunConfig):
    recipe: str = "retrieval"
    seed: int = 42
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

    def checks(self, at):
        interests = self.model.user_tower
        return super().checks(at) + [
            ("loss.type", self.loss.type != "in_batch" or interests.interests == 1 or interests.selection != "max",
             f"takes one query per position: {at('model.user_tower.selection')}=max needs full or sampled"),
            ("model.user_tower.num_ratings", not interests.num_ratings or not self.data.sequence_files,
             f"reads each event's rating, which {at('data.sequence_files')} do not hold: train from the split"),
            ("export.index", self.export.index == "brute_force" or self.model.user_tower.interests == 1,
             f"cannot take the max over {at('model.user_tower.interests')}={self.model.user_tower.interests} "
             "queries: use brute_force"),
        ]
