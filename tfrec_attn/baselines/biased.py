"""Biased baseline for explicit ratings: ``r(u, i) = mu + b_u + b_i``.

Fitted by regularised alternating least squares exactly as Surprise's ``BaselineOnly``
with ``method="als"``: each epoch first sets every item bias, then every user bias, to
the ridge solution given the other::

    b_i = sum_{u in R(i)} (r_ui - mu - b_u) / (reg_item + |R(i)|)
    b_u = sum_{i in R(u)} (r_ui - mu - b_i) / (reg_user + |R(u)|)

It is the reference any rating head must beat: RMSE 0.960 on ML-100K's u1 fold (0.946 mean over u1-u5).
"""

from __future__ import annotations

import numpy as np

from tfrec_attn.data.dataset import Interactions


def _lookup(vocabulary: np.ndarray, ids) -> np.ndarray:
    """Index of each id in the sorted ``vocabulary``, -1 where it is absent."""
    ids = np.asarray(ids).astype(str)
    index = np.minimum(np.searchsorted(vocabulary, ids), len(vocabulary) - 1)
    return np.where(vocabulary[index] == ids, index, -1)


class BiasedBaseline:
    """Global mean + user bias + item bias (Surprise's ``BaselineOnly``, ALS).

    Args:
        reg_user: float. Ridge penalty of the user biases (Surprise's ``reg_u``).
        reg_item: float. Ridge penalty of the item biases (Surprise's ``reg_i``).
        epochs: int. Alternating passes (items, then users).

    Attributes (after :meth:`fit`):
        global_mean: float. Mean training rating.
        user_ids, item_ids: np.ndarray of str, sorted. The ids seen in training.
        user_bias, item_bias: np.ndarray of float64, aligned with the ids.
        rating_range: (float, float). Training ratings' min and max; predictions are clipped to it.

    Example:
        >>> split = grouplens_fold(read_movielens("ml-100k").interactions)  # doctest: +SKIP
        >>> model = BiasedBaseline().fit(split.train)  # doctest: +SKIP
        >>> rating_metrics(model.predict(split.test.user_ids, split.test.item_ids),
        ...                split.test.ratings)  # doctest: +SKIP
    """

    def __init__(self, reg_user: float = 15.0, reg_item: float = 10.0, epochs: int = 10):
        if reg_user < 0 or reg_item < 0:
            raise ValueError(f"reg_user and reg_item must be >= 0, got {reg_user!r} and {reg_item!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        self.reg_user = float(reg_user)
        self.reg_item = float(reg_item)
        self.epochs = epochs

    def fit(self, train: Interactions) -> BiasedBaseline:
        """Fits the biases on ``train``'s rows with a finite rating (others are ignored).

        Args:
            train: Interactions. Rated interactions.

        Returns:
            self.
        """
        rated = np.isfinite(train.ratings)
        if not rated.any():
            raise ValueError(f"BiasedBaseline needs explicit ratings: none of the {len(train)} training "
                             "interactions has a finite rating")
        ratings = train.ratings[rated].astype(np.float64)
        self.user_ids, users = np.unique(train.user_ids[rated], return_inverse=True)
        self.item_ids, items = np.unique(train.item_ids[rated], return_inverse=True)
        num_users, num_items = len(self.user_ids), len(self.item_ids)
        user_counts = np.bincount(users, minlength=num_users)
        item_counts = np.bincount(items, minlength=num_items)

        self.global_mean = float(ratings.mean())
        residual = ratings - self.global_mean
        self.user_bias = np.zeros(num_users)
        self.item_bias = np.zeros(num_items)
        for _ in range(self.epochs):
            self.item_bias = (np.bincount(items, residual - self.user_bias[users], minlength=num_items)
                              / (self.reg_item + item_counts))
            self.user_bias = (np.bincount(users, residual - self.item_bias[items], minlength=num_users)
                              / (self.reg_user + user_counts))
        self.rating_range = (float(ratings.min()), float(ratings.max()))
        return self

    def predict(self, user_ids, item_ids) -> np.ndarray:
        """Predicted ratings; an unknown user's or item's bias counts as 0.

        Args:
            user_ids: array-like of str, [n].
            item_ids: array-like of str, [n].

        Returns:
            np.ndarray of float32, [n], within :attr:`rating_range`.
        """
        if not hasattr(self, "global_mean"):
            raise RuntimeError("BiasedBaseline.predict called before fit")
        users = _lookup(self.user_ids, user_ids)
        items = _lookup(self.item_ids, item_ids)
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError(f"user_ids and item_ids must be 1-D and of equal length; got shapes "
                             f"{users.shape} and {items.shape}")
        user_bias = np.where(users >= 0, self.user_bias[np.maximum(users, 0)], 0.0)
        item_bias = np.where(items >= 0, self.item_bias[np.maximum(items, 0)], 0.0)
        predicted = self.global_mean + user_bias + item_bias
        return np.clip(predicted, *self.rating_range).astype(np.float32)


def biased_baseline_metrics(train: Interactions, user_ids, item_ids, actual) -> dict:
    """RMSE / MAE / count of :class:`BiasedBaseline` fitted on ``train`` for the rated
    ``(user_ids, item_ids)`` pairs (``actual``: their ratings, NaN = unrated): the reference
    every rating figure of the project is set beside."""
    from tfrec_attn.evaluation.rating import rating_metrics

    return rating_metrics(BiasedBaseline().fit(train).predict(user_ids, item_ids), actual)
