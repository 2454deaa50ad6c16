"""Feature preprocessing layers that live inside the graph (and so inside exports)."""

from tfrec_attn.features.vocab import ItemVocabulary

__all__ = ["ItemVocabulary"]
