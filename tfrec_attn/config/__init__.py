"""Configuration: typed dataclass sections loaded from YAML (``include:``, ``--set``), each
recipe's root config registered under its ``recipe:`` name.

    >>> config = load_config("training/configs/ml100k_ranking.yaml", ["train.epochs=5"])
    >>> type(config).__name__, config.recipe
    ('RankingConfig', 'ranking')

The loader (:mod:`.loader`) and the registry (:mod:`.registry`) know no recipe; the shared
sections are in :mod:`.sections`, each recipe's in a module of its own, which registers it.
"""

from tfrec_attn.config.errors import ConfigError
from tfrec_attn.config.loader import config_from_dict, load_config, save_config
from tfrec_attn.config.pipeline import PipelineConfig
from tfrec_attn.config.ranking import RankingConfig
from tfrec_attn.config.rating import KernelAutoencoderConfig, RatingConfig
from tfrec_attn.config.registry import config_class, recipe_names, register_config
from tfrec_attn.config.retrieval import DEFAULT_ENCODER, ItemTowerConfig, RetrievalConfig
from tfrec_attn.config.sections import DataConfig, RunConfig, Section, TrainConfig

__all__ = ["ConfigError", "DEFAULT_ENCODER", "DataConfig", "ItemTowerConfig", "KernelAutoencoderConfig", "PipelineConfig", "RankingConfig",
           "RatingConfig", "RetrievalConfig", "RunConfig", "Section", "TrainConfig", "config_class",
           "config_from_dict", "load_config", "recipe_names", "register_config", "save_config"]
