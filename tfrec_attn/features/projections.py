"""Linear maps of feature matrices, fitted once in numpy: principal-component projection
(an embedding table started from another space's vectors), ZCA whitening (text encodings
decorrelated before a tower projects them) and the whitened principal subspace (a frozen
semantic part of an item embedding: AlphaFuse)."""

from __future__ import annotations

import numpy as np


def project_rows(vectors, width: int) -> np.ndarray:
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


def zca_whitening(vectors, epsilon: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [d], matrix [d, d])`` such that ``(x - mean) @ matrix`` has identity covariance
    over ``vectors`` [n, d] (ZCA: ``U diag(1 / sqrt(s + epsilon)) U^T`` of the covariance
    ``U diag(s) U^T``, the whitening closest to the identity map; WhitenRec, ICDE 2024)."""
    vectors = np.asarray(vectors, np.float64)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise ValueError(f"whitening needs a [n >= 2, d] matrix, got shape {vectors.shape}")
    mean = vectors.mean(axis=0)
    covariance = np.cov(vectors - mean, rowvar=False, bias=True)
    values, vectors_ = np.linalg.eigh(covariance)
    matrix = (vectors_ / np.sqrt(np.maximum(values, 0.0) + epsilon)) @ vectors_.T
    return mean.astype(np.float32), matrix.astype(np.float32)


def principal_subspace(vectors, width: int, epsilon: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [d], basis [d, width])`` such that ``(x - mean) @ basis`` are the coordinates of
    ``x`` on the top ``width`` principal directions of ``vectors`` [n, d], each scaled to unit
    variance over them (the semantic subspace of AlphaFuse, SIGIR 2025; its complement is where
    the ids are learned)."""
    vectors = np.asarray(vectors, np.float64)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise ValueError(f"a principal subspace needs a [n >= 2, d] matrix, got shape {vectors.shape}")
    if not 0 < width <= min(vectors.shape):
        raise ValueError(f"width must be in [1, {min(vectors.shape)}] for a {vectors.shape} matrix, got {width}")
    mean = vectors.mean(axis=0)
    _, values, directions = np.linalg.svd(vectors - mean, full_matrices=False)
    deviations = values[:width] / np.sqrt(len(vectors))
    basis = directions[:width].T / np.sqrt(deviations ** 2 + epsilon)
    return mean.astype(np.float32), basis.astype(np.float32)
