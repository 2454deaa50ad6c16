"""BERT tokenization inside the graph: strings -> ``input_ids`` / ``attention_mask`` /
``token_type_ids`` with ``tensorflow_text``, the WordPiece ``vocab.txt`` a SavedModel asset.

Matches ``transformers.BertTokenizer`` on one segment: lower-casing and accent stripping for
uncased models, ``[CLS] tokens [SEP]``, truncation to ``max_tokens`` (the two specials
included), ``[PAD]`` up to the longest text of the batch.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf
import tensorflow_text as tf_text

from tfrec_attn.features.serializable import register
from tfrec_attn.text.pretrained import PretrainedModelError

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]")


def special_ids(vocab_path: str) -> dict:
    """``{"[CLS]": id, "[SEP]": id, "[PAD]": id}``: the rows of ``vocab_path`` holding them.

    Raises:
        PretrainedModelError: naming the file, when one of them is missing.
    """
    ids = {}
    with open(vocab_path, encoding="utf-8") as f:
        for index, token in enumerate(f):
            token = token.rstrip("\n")
            if token in SPECIAL_TOKENS:
                ids[token] = index
    missing = set(SPECIAL_TOKENS) - set(ids)
    if missing:
        raise PretrainedModelError(f"{vocab_path}: no {', '.join(sorted(missing))} token (not a BERT vocabulary)")
    return ids


def lower_case_of(model_dir: str) -> bool:
    """Whether the model expects lower-cased, accent-stripped input (``do_lower_case``)."""
    path = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return bool(json.load(f).get("do_lower_case", True))
    name = os.path.basename(os.path.normpath(model_dir)).lower()
    return not ("cased" in name and "uncased" not in name)


@register
class BertTokenization(tf.keras.layers.Layer):
    """Strings -> BERT model inputs, padded to the longest text of the batch.

    WordPiece (``tensorflow_text.BertTokenizer``), then ``RoundRobinTrimmer`` (cut to
    ``max_tokens - 2``), ``combine_segments`` (``[CLS] ... [SEP]``, segment ids) and
    ``pad_model_inputs`` (``[PAD]`` and the mask).

    Args:
        vocab_path: str. WordPiece ``vocab.txt`` (becomes a SavedModel asset on export).
        lower_case: bool. Lower-case + strip accents (uncased models).
        max_tokens: int. Longest output including ``[CLS]`` and ``[SEP]``; >= 3.

    Call arguments:
        texts: string [N].

    Returns:
        dict of int32 [N, T], T = the longest packed text (<= ``max_tokens``):
        ``input_ids`` (``[PAD]`` after the text), ``attention_mask`` (1 on the text,
        0 on padding), ``token_type_ids`` (0: one segment).

    Example:
        >>> layer = BertTokenization("all-MiniLM-L6-v2/vocab.txt", max_tokens=8)
        >>> layer(tf.constant(["Toy Story"]))["input_ids"]  # [[101, 9121, 2466, 102]]
    """

    def __init__(self, vocab_path: str, lower_case: bool = True, max_tokens: int = 64, **kwargs):
        super().__init__(**{**kwargs, "trainable": False})  # nothing to train (get_config says trainable)
        if max_tokens < 3:
            raise ValueError(f"max_tokens must be >= 3 ([CLS] + a token + [SEP]), got {max_tokens}")
        self.vocab_path = vocab_path
        self.lower_case = lower_case
        self.max_tokens = max_tokens
        special = special_ids(vocab_path)
        self.cls_id, self.sep_id, self.pad_id = special["[CLS]"], special["[SEP]"], special["[PAD]"]
        self.tokenizer = tf_text.BertTokenizer(vocab_path, lower_case=lower_case, token_out_type=tf.int32,
                                               unknown_token="[UNK]")
        self._trimmer = tf_text.RoundRobinTrimmer(max_seq_length=max_tokens - 2)

    def call(self, texts):
        tokens = self.tokenizer.tokenize(tf.reshape(texts, [-1])).merge_dims(-2, -1)
        (tokens,) = self._trimmer.trim([tokens])
        ids, segments = tf_text.combine_segments([tokens], start_of_sequence_id=self.cls_id,
                                                 end_of_segment_id=self.sep_id)
        width = ids.bounding_shape(axis=1)
        input_ids, mask = tf_text.pad_model_inputs(ids, width, pad_value=self.pad_id)
        token_type_ids, _ = tf_text.pad_model_inputs(segments, width)
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_type_ids}

    def get_config(self):
        return {**super().get_config(), "vocab_path": self.vocab_path, "lower_case": self.lower_case,
                "max_tokens": self.max_tokens}
