"""Embedding tables started from another space's vectors (projected when widths differ):
the ranker's ids from the retrieval model's items, a retrieval id table from the items' text
encodings (LLM2BERT4Rec, RecSys 2023; LLM-ESR, NeurIPS 2024)."""

from __future__ import annotations

import numpy as np

from tfrec_attn.features.projections import project_rows


def projected_init(table: np.ndarray, rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``table`` [num_indices, d] with ``table[rows[i]]`` replaced by ``vectors[i]`` — centred,
    projected on their top ``d`` principal directions when their width differs, rescaled to
    ``table``'s initial spread (the optimizer then starts where a random init would, in scale).
    Rows below 2 (padding, OOV) are skipped."""
    vectors = project_rows(vectors, table.shape[1])
    vectors *= table.std() / max(float(vectors.std()), 1e-12)
    rows = np.asarray(rows)
    known = rows >= 2
    out = table.copy()
    out[rows[known]] = vectors[known]
    return out


def retrieval_item_init(retrieval, vocabulary, table: np.ndarray) -> np.ndarray:
    """``table`` (the ranker's id embeddings, [num_indices, d]) with the rows of the items the
    retrieval model knows replaced by its item vectors (:func:`projected_init`).

    Args:
        retrieval: Retriever (``model`` with ``item_embeddings()``, ``vocabulary``).
        vocabulary: ItemVocabulary. The ranker's.
        table: float [num_indices, d].
    """
    return projected_init(table, *retrieval_item_vectors(retrieval, vocabulary))


def retrieval_item_vectors(retrieval, vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """The retrieval model's item vectors [n, d] and the rows of ``vocabulary`` (the ranker's
    indices, below 2 where the ranker lacks the item) they belong to."""
    vectors = np.asarray(retrieval.model.item_embeddings(), np.float32)  # retrieval table rows
    return vocabulary.model_indices(retrieval.vocabulary.item_ids), vectors


def retrieval_item_table(retrieval, vocabulary) -> np.ndarray:
    """The retrieval model's item vectors as a table in ``vocabulary``'s indices
    [num_indices, d], 0 where it lacks the item (the ranker's frozen ``retrieval_items``)."""
    rows, vectors = retrieval_item_vectors(retrieval, vocabulary)
    table = np.zeros((vocabulary.num_indices, vectors.shape[1]), np.float32)
    known = rows >= 2
    table[rows[known]] = vectors[known]
    return table
