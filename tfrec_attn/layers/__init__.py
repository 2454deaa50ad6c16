"""Keras layers of tfrec_attn; each is serializable and registered under ``tfrec_attn``."""

from tfrec_attn.layers.attention import PositionalEmbedding, TransformerBlock, attention_mask
from tfrec_attn.layers.interests import CapsuleExtractor, InterestExtractor
from tfrec_attn.layers.item_features import ItemFeatureEmbedding
from tfrec_attn.layers.item_tower import IdItemTower, build_item_tower
from tfrec_attn.layers.ranking_network import RankingNetwork
from tfrec_attn.layers.target_attention import BstAttention, DinAttention
from tfrec_attn.layers.topk import ExcludingBruteForce
from tfrec_attn.layers.user_tower import UserTower

__all__ = [
    "BstAttention", "CapsuleExtractor", "DinAttention", "InterestExtractor", "ItemFeatureEmbedding", "RankingNetwork",
    "ExcludingBruteForce", "IdItemTower", "build_item_tower", "PositionalEmbedding", "TransformerBlock", "UserTower",
    "attention_mask",
]
