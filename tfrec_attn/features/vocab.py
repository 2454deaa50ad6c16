"""The item id spaces and their one owner, :class:`ItemVocabulary`.

Three spaces, and the only place that converts between them:

* raw id: the string in the data files and in serving requests;
* split index ``i``: position in the vocabulary (the split's catalogue order);
* model index ``i + 2``: rows of the item embedding tables, where ``0`` = padding (the
  empty string ``""``) and ``1`` = out-of-vocabulary. In-graph, a ``StringLookup`` maps raw
  ids to model indices.

"Table rows" (what ``item_embeddings()`` and the export's index hold) are model indices
of real items minus 2 = split indices. Use :meth:`ItemVocabulary.model_indices`,
:func:`is_item` and :func:`table_rows` instead of arithmetic on the constants.
"""

from __future__ import annotations

import os

import numpy as np

PAD_INDEX = 0
OOV_INDEX = 1
FIRST_ITEM_INDEX = 2
PAD_TOKEN = ""


def is_item(model_indices):
    """True where a model index is a real catalogue item (not padding, not OOV); numpy or TF."""
    return model_indices >= FIRST_ITEM_INDEX


def table_rows(model_indices):
    """Model indices of real items -> rows of the item table (numpy or TF; undefined elsewhere)."""
    return model_indices - FIRST_ITEM_INDEX


def history_rows(model_indices):
    """The item-table rows a history's items exclude from its recommendations: ``table_rows``
    of real items, -1 at padding and OOV (TF)."""
    import tensorflow as tf

    return tf.where(is_item(model_indices), table_rows(model_indices), -1)


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
        """Split indices of this vocabulary -> model indices."""
        return np.asarray(catalogue_indices, dtype=np.int64) + FIRST_ITEM_INDEX

    def model_indices(self, raw_ids) -> np.ndarray:
        """Raw ids -> model indices (:data:`OOV_INDEX` for ids not in the vocabulary)."""
        if not hasattr(self, "_index"):
            self._index = {item: i + FIRST_ITEM_INDEX for i, item in enumerate(self.item_ids)}
        return np.array([self._index.get(str(item), OOV_INDEX) for item in raw_ids], dtype=np.int64)

    @staticmethod
    def is_item(model_indices):
        return is_item(model_indices)

    @staticmethod
    def table_rows(model_indices):
        return table_rows(model_indices)
