"""A TF-Serving-compatible model server (gRPC PredictionService / ModelService / health).

Built on the real ``tensorflow-serving-api`` protos, so any TF Serving client works
against it, and the same exports run unchanged on the ``tensorflow/serving`` image.
"""

from tfrec_attn.serving.manager import ModelManager
from tfrec_attn.serving.rest import RestOptions
from tfrec_attn.serving.servable import RequestLimits
from tfrec_attn.serving.server import ModelServer, serve

__all__ = ["ModelManager", "ModelServer", "RequestLimits", "RestOptions", "serve"]
