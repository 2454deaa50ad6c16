"""Embedding tables started from another model's vectors (projected when widths differ)."""

from __future__ import annotations

import numpy as np


def project_rows(vectors: np.ndarray, width: int) -> np.ndarray:
    """``vectors`` [n, d] centred and projected on their top ``width`` principal directions
    (zero-padded when ``width`` > d); as they are, centred, when the widths agree."""
    vectors = np.asarray(vectors, np.float32)
    vectors = vectors - vectors.mean(axis=0)
    if vectors.shape[1] != width:
        _, _, directions = np.linalg.svd(vectors, full_matrices=False)
        vectors = vectors @ directions[:width].T
        if vectors.shape[1] < width:
            vectors = np.pad(vectors, ((0, 0), (0, width - vectors.shape[1])))
    return vectors


def retrieval_item_init(retrieval, vocabulary, table: np.ndarray) -> np.ndarray:
    """``table`` (the ranker's id embeddings, [num_indices, d]) with the rows of the items the
    retrieval model knows replaced by its item vectors — projected on their top ``d``
    principal directions when its width differs — rescaled to ``table``'s initial spread.

    Args:
        retrieval: Retriever (``model`` with ``item_embeddings()``, ``vocabulary``).
        vocabulary: ItemVocabulary. The ranker's.
        table: float [num_indices, d].
    """
    vectors = project_rows(np.asarray(retrieval.model.item_embeddings(), np.float32), table.shape[1])
    vectors *= table.std() / max(float(vectors.std()), 1e-12)
    rows = vocabulary.model_indices(retrieval.vocabulary.item_ids)
    out = table.copy()
    known = vocabulary.is_item(rows)
    out[rows[known]] = vectors[known]
    return out
