"""Raw string ids <-> model indices, via ``tf.keras.layers.StringLookup``.

Index layout (shared by the pipeline, the towers and the exports):
``0`` = padding (the empty string ``""``), ``1`` = out-of-vocabulary, ``2 + i`` =
catalogue item ``i`` of :class:`~tfrec_attn.data.splits.LeaveOneOutSplit`.
"""

from __future__ import annotations

import os

import numpy as np

PAD_INDEX = 0
OOV_INDEX = 1
FIRST_ITEM_INDEX = 2
PAD_TOKEN = ""


class ItemVocabulary:
    """An ordered item catalogue that can be saved to a file and reloaded.

    Args:
        item_ids: sequence of str. Catalogue order (index ``i`` <-> model index ``i + 2``).

    Example:
        >>> vocab = ItemVocabulary(["50", "172"])
        >>> vocab.lookup_layer()(tf.constant([["172", "", "nope"]]))  # [[3, 0, 1]]
    """

    def __init__(self, item_ids):
        ids = [str(i) for i in item_ids]
        for position, item in enumerate(ids):
            if item == PAD_TOKEN or "\n" in item or "\r" in item:
                raise ValueError(f"item id at position {position} is {item!r}: ids must be non-empty "
                                 "and contain no line breaks")
        if len(set(ids)) != len(ids):
            raise ValueError("item ids in a vocabulary must be unique")
        self.item_ids = np.asarray(ids, dtype=object)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def num_indices(self) -> int:
        """Size of an embedding table over this vocabulary (pad + OOV + items)."""
        return len(self.item_ids) + FIRST_ITEM_INDEX

    def save(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(f"{item}\n" for item in self.item_ids)
        return path

    @classmethod
    def load(cls, path: str) -> ItemVocabulary:
        with open(path, encoding="utf-8") as handle:
            return cls([line.rstrip("\n") for line in handle])

    def lookup_layer(self, invert: bool = False, name: str | None = None):
        """A ``StringLookup`` (``invert=True``: index -> id, padding and OOV give ``""``/``[UNK]``)."""
        import tensorflow as tf

        return tf.keras.layers.StringLookup(
            vocabulary=list(self.item_ids), mask_token=PAD_TOKEN, num_oov_indices=1,
            invert=invert, name=name or ("item_id_inverse" if invert else "item_id_lookup"))

    def to_index(self, catalogue_indices) -> np.ndarray:
        """Catalogue indices (as in a split) -> model indices."""
        return np.asarray(catalogue_indices, dtype=np.int64) + FIRST_ITEM_INDEX
