"""Implicit-feedback ALS (the ``implicit`` package's conjugate-gradient solver).

Fitted on the training-part user x item count matrix. At test time the user factors
are re-solved from train + validation with ``recalculate_user``, so the validation
interaction informs the test ranking exactly as it does for the sequence models.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits


def _count_matrix(histories, num_items: int) -> sp.csr_matrix:
    lengths = [len(h) for h in histories]
    rows = np.repeat(np.arange(len(histories)), lengths)
    cols = np.concatenate(histories) if histories else np.zeros(0, np.int64)
    data = np.ones(len(cols), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(len(histories), num_items))
    matrix.sum_duplicates()
    return matrix


class ALSBaseline:
    """Args mirror ``implicit.als.AlternatingLeastSquares``; defaults are the tuned reference."""

    def __init__(self, factors: int = 32, regularization: float = 0.01, alpha: float = 1.0,
                 iterations: int = 15, random_state: int = 42):
        self.params = dict(factors=factors, regularization=regularization, alpha=alpha,
                           iterations=iterations, random_state=random_state)

    def fit(self, split) -> ALSBaseline:
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError as error:
            raise ImportError("the ALS baseline needs the `implicit` package: "
                              "pip install -e .[als]") from error
        self.num_items = split.num_items
        with threadpool_limits(1, "blas"):  # implicit parallelises itself; BLAS threads only contend
            self.model = AlternatingLeastSquares(use_cg=True, calculate_training_loss=False,
                                                 **self.params)
            self.model.fit(_count_matrix(split.train_sequences(), split.num_items), show_progress=False)
        return self

    def score_fn(self, split):
        item_factors = np.asarray(self.model.item_factors)

        def score(users, histories):
            matrix = _count_matrix(list(histories), self.num_items)
            with threadpool_limits(1, "blas"):
                user_factors = np.asarray(self.model.recalculate_user(np.arange(len(users)), matrix))
            return user_factors.reshape(len(users), -1) @ item_factors.T

        return score
