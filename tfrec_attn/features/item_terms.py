"""Readable descriptors of items, the vocabulary that interest labels are written in.

Two tables over a model's index space (row = model index; padding and OOV rows empty):

* **genres** (categories): each item's genres, weighted by their inverse document
  frequency, so a genre most items share (``Drama``; ``Industrial & Scientific``) says less;
* **words**: the salient words of each item's title and description: TF-IDF over the
  catalogue, tokenized by Keras' ``TextVectorization``; words that too many items share
  (``the``, ``brand``) or only one item has are dropped, and each item keeps its best few.

Each item's weights sum to 1, so attention mass over a history becomes mass over terms.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

WORDS_PER_ITEM = 8
MAX_DOCUMENT_FREQUENCY = 0.05  # a word in more than this share of the items describes none of them
_PUNCTUATION = re.compile(r"[^\w\s]+")


@dataclasses.dataclass
class ItemTerms:
    """Terms of every model index.

    Attributes:
        vocabulary: list of str [T]. The terms.
        term_ids: int32 [num_indices, m]. Each index's terms (0 where unused, weight 0).
        weights: float32 [num_indices, m]. Their weights (each used row sums to 1).
    """

    vocabulary: list
    term_ids: np.ndarray
    weights: np.ndarray

    @classmethod
    def empty(cls, num_indices: int) -> ItemTerms:
        return cls([""], np.zeros((num_indices, 1), np.int32), np.zeros((num_indices, 1), np.float32))

    @staticmethod
    def save_pair(path: str, genres: ItemTerms, words: ItemTerms) -> str:
        """Writes (genres, words) to one ``.npz`` (a run keeps the tables its labels use)."""
        np.savez(path, **{f"{name}_{field}": np.asarray(getattr(terms, field))
                          for name, terms in (("genres", genres), ("words", words))
                          for field in ("vocabulary", "term_ids", "weights")})
        return path

    @classmethod
    def load_pair(cls, path: str) -> tuple[ItemTerms, ItemTerms]:
        """(genres, words) from :meth:`save_pair`."""
        with np.load(path) as saved:
            return tuple(cls([str(t) for t in saved[f"{name}_vocabulary"]], saved[f"{name}_term_ids"],
                             saved[f"{name}_weights"]) for name in ("genres", "words"))

    def top(self, index: int, n: int = 3) -> list:
        """The ``n`` heaviest terms of one model index."""
        order = np.argsort(-self.weights[index], kind="stable")[:n]
        return [self.vocabulary[self.term_ids[index, j]] for j in order if self.weights[index, j] > 0]


def _table(rows: list, vocabulary: list, num_indices: int) -> ItemTerms:
    """``rows[i]``: {term id: weight} of model index i (normalized here)."""
    width = max([len(r) for r in rows] + [1])
    term_ids = np.zeros((num_indices, width), np.int32)
    weights = np.zeros((num_indices, width), np.float32)
    for i, row in enumerate(rows):
        total = sum(row.values())
        for j, (term, weight) in enumerate(sorted(row.items(), key=lambda kv: -kv[1])):
            term_ids[i, j] = term
            weights[i, j] = weight / total
    return ItemTerms(list(vocabulary) or [""], term_ids, weights)


def genre_terms(items: list) -> ItemTerms:
    """IDF-weighted genres of ``items`` (one ``Item`` or None per model index)."""
    names = sorted({g for item in items if item is not None for g in item.genres})
    index = {g: i for i, g in enumerate(names)}
    described = [item for item in items if item is not None and item.genres]
    frequency = np.zeros(len(names))
    for item in described:
        for g in set(item.genres):
            frequency[index[g]] += 1
    idf = np.log((len(described) + 1) / (frequency + 1))
    rows = [{index[g]: idf[index[g]] for g in item.genres if idf[index[g]] > 0} if item is not None else {}
            for item in items]
    return _table(rows, names, len(items))


def word_terms(items: list, per_item: int = WORDS_PER_ITEM, max_df: float = MAX_DOCUMENT_FREQUENCY) -> ItemTerms:
    """The ``per_item`` highest TF-IDF words of each item's title and description (words of
    three letters or more that occur in 2 or more items and at most ``max_df`` of them; an
    item's own genre names are left to :func:`genre_terms`)."""
    import tensorflow as tf

    # Punctuation becomes a space first: "Fittings,Flared" is two words, not "fittingsflared".
    texts = [_PUNCTUATION.sub(" ", f"{item.title} {item.description}") if item is not None else "" for item in items]
    present = [i for i, t in enumerate(texts) if t.strip()]
    if not present:
        return ItemTerms.empty(len(items))
    layer = tf.keras.layers.TextVectorization(standardize="lower", output_mode="int")
    layer.adapt(tf.constant([texts[i] for i in present]), batch_size=512)
    words = [str(w) for w in layer.get_vocabulary()]
    genre_words = {w for item in items if item is not None for g in item.genres for w in g.lower().split()}
    documents = {}
    for start in range(0, len(present), 512):
        batch = present[start:start + 512]
        tokens = layer(tf.constant([texts[i] for i in batch])).numpy()
        for i, row in zip(batch, tokens):
            ids, counts = np.unique(row[row > 1], return_counts=True)  # 0 padding, 1 OOV
            documents[i] = dict(zip(ids.tolist(), counts.tolist()))
    frequency = np.zeros(len(words))
    for doc in documents.values():
        frequency[list(doc)] += 1
    keep = np.array([len(w) >= 3 and w.isalpha() and w not in genre_words for w in words])
    keep &= (frequency >= 2) & (frequency <= max(2, max_df * len(present)))
    idf = np.log(len(present) / np.maximum(frequency, 1))
    used = np.flatnonzero(keep)
    new_id = {int(w): j for j, w in enumerate(used)}
    rows = []
    for i in range(len(items)):
        scored = {new_id[w]: c * idf[w] for w, c in documents.get(i, {}).items() if keep[w]}
        rows.append(dict(sorted(scored.items(), key=lambda kv: -kv[1])[:per_item]))
    return _table(rows, [words[w] for w in used], len(items))


def item_terms(dataset, vocabulary) -> tuple[ItemTerms, ItemTerms]:
    """(genres, words) over ``vocabulary``'s model indices, from ``dataset.items`` (empty
    tables when there is no dataset or it has no item metadata)."""
    items = [None, None] + [dataset.items.get(i) if dataset is not None else None for i in vocabulary.item_ids]
    if not any(item is not None for item in items):
        return ItemTerms.empty(len(items)), ItemTerms.empty(len(items))
    return genre_terms(items), word_terms(items)
