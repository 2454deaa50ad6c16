"""Versioned SavedModel exports in TF Serving layout (``BASE/<model_name>/<version>/``)."""

from tfrec_attn.export.index import build_index
from tfrec_attn.export.saved_model import export_retrieval, next_version, publish_saved_model
from tfrec_attn.export.signatures import RetrievalServingModule

__all__ = ["RetrievalServingModule", "build_index", "export_retrieval", "next_version",
           "publish_saved_model"]
