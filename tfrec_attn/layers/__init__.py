"""Keras layers of tfrec_attn; each is serializable and registered under ``tfrec_attn``."""

from tfrec_attn.layers.attention import PositionalEmbedding, TransformerBlock, attention_mask
from tfrec_attn.layers.item_tower import IdItemTower, build_item_tower
from tfrec_attn.layers.topk import ExcludingBruteForce
from tfrec_attn.layers.user_tower import UserTower

__all__ = [
    "ExcludingBruteForce", "IdItemTower", "build_item_tower", "PositionalEmbedding", "TransformerBlock", "UserTower",
    "attention_mask",
]
