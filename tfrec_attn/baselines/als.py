"""Implicit-feedback ALS (the ``implicit`` package's conjugate-gradient solver).

Fitted on the training-part user x item count matrix. At test time the user factors
are re-solved from train + validation with ``recalculate_user``, so the validation
interaction informs the test ranking exactly as it does for the sequence models.

``implicit`` and ``threadpoolctl`` are the optional ``als`` extra, imported when ALS is
first used: without them everything else here works, and ALS is an
:class:`ALSNotInstalledError` saying how to install them.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tfrec_attn.errors import TfrecAttnError

INSTALL = "pip install 'tfrec_attn[als]'"


class ALSNotInstalledError(TfrecAttnError, ImportError):
    """The ALS baseline's optional packages (the ``als`` extra) are not installed."""


def als_modules():
    """``(AlternatingLeastSquares, threadpool_limits)``, or :class:`ALSNotInstalledError`
    naming the missing package and the ``pip install`` that brings it."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits
    except ImportError as error:
        missing = (error.name or "implicit").split(".")[0]
        raise ALSNotInstalledError(
            f"the ALS baseline needs the `implicit` and `threadpoolctl` packages, and `{missing}` is not "
            f"installed: {INSTALL} (in a checkout: pip install -e '.[als]'), or leave ALS out "
            "(tfrec-attn baselines --models MostPop)") from None
    return AlternatingLeastSquares, threadpool_limits


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
        AlternatingLeastSquares, threadpool_limits = als_modules()
        self.num_items = split.num_items
        with threadpool_limits(1, "blas"):  # implicit parallelises itself; BLAS threads only contend
            self.model = AlternatingLeastSquares(use_cg=True, calculate_training_loss=False,
                                                 **self.params)
            self.model.fit(_count_matrix(split.train_sequences(), split.num_items), show_progress=False)
        return self

    def score_fn(self, split):
        _, threadpool_limits = als_modules()
        item_factors = np.asarray(self.model.item_factors)

        def score(users, histories):
            matrix = _count_matrix(list(histories), self.num_items)
            with threadpool_limits(1, "blas"):
                user_factors = np.asarray(self.model.recalculate_user(np.arange(len(users)), matrix))
            return user_factors.reshape(len(users), -1) @ item_factors.T

        return score
