"""Models of tfrec_attn (each a ``tfrs.Model`` that only writes ``compute_loss``)."""

from tfrec_attn.models.retrieval import SequentialRetrievalModel, compact_history

__all__ = ["SequentialRetrievalModel", "compact_history"]
