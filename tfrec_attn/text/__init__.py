"""Item text for the text tower: the encoder (in-graph tokenization, pretrained BERT, pooling),
where its weights come from and how they load, and the cached text features of a catalogue.

    >>> encoder = TextEncoder(resolve_model_dir(DEFAULT_ENCODER), max_tokens=64)
    >>> encode_texts(encoder, ["Toy Story (1995). Genres: Animation"]).shape
    (1, 384)

Loading a config imports this package, so importing it imports no TensorFlow: the names
that need it (the Keras layers, ``encode_texts``, ``text_features``) load on first use.
"""

import importlib

from tfrec_attn.text.defaults import DEFAULT_ENCODER, POOLING_TYPES
from tfrec_attn.text.pretrained import PretrainedModelError, load_bert, resolve_model_dir

_LAZY = {
    "BertTokenization": "tfrec_attn.text.tokenization",
    "TextEncoder": "tfrec_attn.text.encoder",
    "encode_texts": "tfrec_attn.text.encoder",
    "text_features": "tfrec_attn.text.features",
}

__all__ = ["BertTokenization", "DEFAULT_ENCODER", "POOLING_TYPES", "PretrainedModelError", "TextEncoder",
           "encode_texts", "load_bert", "resolve_model_dir", "text_features"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
