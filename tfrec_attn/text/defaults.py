"""The text package's names that configs read, in a module that imports no TensorFlow
(loading a config imports it)."""

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"  # the pretrained BERT of every text path
POOLING_TYPES = ("mean", "cls")  # token states -> one vector: masked mean or [CLS]
