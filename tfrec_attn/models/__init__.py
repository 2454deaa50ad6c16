"""Models of tfrec_attn: each a ``tfrs.Model`` (:class:`RecommenderModel`) that composes
functional Keras towers and writes only ``compute_loss``."""

from tfrec_attn.models.base import RecommenderModel
from tfrec_attn.models.build import build_retrieval_model
from tfrec_attn.models.ensemble import EnsembleRetrievalModel
from tfrec_attn.models.multi_interest import MultiInterestRetrievalModel
from tfrec_attn.models.ranking import RankingModel, build_ranking_model
from tfrec_attn.models.retrieval import SequentialRetrievalModel, compact_history
from tfrec_attn.models.saving import load_model, model_from_config_file, save_model_config

__all__ = ["EnsembleRetrievalModel", "MultiInterestRetrievalModel", "RankingModel", "RecommenderModel",
           "SequentialRetrievalModel", "build_ranking_model", "build_retrieval_model", "compact_history", "load_model",
           "model_from_config_file", "save_model_config"]
