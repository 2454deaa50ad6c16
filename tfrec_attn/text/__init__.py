"""Item text for the text tower: pretrained BERT encoders (where the weights come from and
how they load) and the cached text features of a catalogue."""

from tfrec_attn.text.pretrained import (
    DEFAULT_ENCODER,
    PretrainedModelError,
    load_bert,
    resolve_model_dir,
)

__all__ = ["DEFAULT_ENCODER", "PretrainedModelError", "load_bert", "resolve_model_dir"]
