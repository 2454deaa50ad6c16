"""Train/test splits of rated interactions, for rating-prediction benchmarks (RMSE/MAE).

* :func:`grouplens_fold` derives ML-100K's canonical ``u1.base``/``u1.test`` .. ``u5``
  folds the way GroupLens' ``mku.sh`` makes them: fold ``i``'s test set is lines
  ``(i-1)*20000+1 .. i*20000`` of ``u.data`` (file order), its base set every other line.
  ``mku.sh`` also sorts each file by (user, item); rows here stay in file order, which
  holds the same rows and gives the same RMSE/MAE.
* :func:`random_rating_split` holds out a seeded random fraction of the rows, for data
  without a canonical split.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from tfrec_attn.data.dataset import Interactions
from tfrec_attn.data.splits import LeaveOneOutSplit

ML100K_SIZE = 100_000
GROUPLENS_FOLDS = 5
_FOLD_SIZE = ML100K_SIZE // GROUPLENS_FOLDS


@dataclasses.dataclass
class RatingSplit:
    """Rated interactions split in two; both parts keep the source's row order.

    Attributes:
        name: str. E.g. ``"u1"`` (GroupLens fold 1) or ``"random-0.2-seed0"``.
        train: Interactions. What a model is fitted on.
        test: Interactions. Where RMSE/MAE are measured.
    """

    name: str
    train: Interactions
    test: Interactions


def grouplens_fold(interactions: Interactions, fold: int = 1) -> RatingSplit:
    """ML-100K's GroupLens fold ``u{fold}``: the same rows as ``u{fold}.base``/``u{fold}.test``.

    Args:
        interactions: Interactions. ML-100K's ``u.data``, all 100,000 rows in file order
            (e.g. ``read_movielens(dir).interactions``); a reordered or filtered log gives
            other folds, so only the row count can be checked here.
        fold: int. 1 to 5 (``u1`` is the usual benchmark).

    Returns:
        RatingSplit named ``u{fold}``: test = rows ``(fold-1)*20000 .. fold*20000 - 1``
        (0-based), train = every other row.

    Example:
        >>> split = grouplens_fold(read_movielens("ml-100k").interactions)  # doctest: +SKIP
        >>> len(split.train), len(split.test)  # doctest: +SKIP
        (80000, 20000)
    """
    if isinstance(fold, bool) or not isinstance(fold, numbers.Integral) or not 1 <= fold <= GROUPLENS_FOLDS:
        raise ValueError(f"fold must be an integer from 1 to {GROUPLENS_FOLDS} (u1 .. u{GROUPLENS_FOLDS}), "
                         f"got {fold!r}")
    if len(interactions) != ML100K_SIZE:
        raise ValueError(f"the GroupLens folds u1..u{GROUPLENS_FOLDS} are defined on ML-100K's u.data "
                         f"({ML100K_SIZE:,} rows in file order); got {len(interactions):,} interactions. "
                         "Use random_rating_split for other data.")
    is_test = np.zeros(ML100K_SIZE, dtype=bool)
    is_test[(fold - 1) * _FOLD_SIZE:fold * _FOLD_SIZE] = True
    return RatingSplit(f"u{fold}", interactions.take(np.flatnonzero(~is_test)),
                       interactions.take(np.flatnonzero(is_test)))


def random_rating_split(interactions: Interactions, test_fraction: float = 0.2, seed: int = 0) -> RatingSplit:
    """Holds out ``round(test_fraction * n)`` rows drawn uniformly at random (seeded).

    Users or items may occur only in the test part (a rating model must handle them).

    Args:
        interactions: Interactions. Any log; rows without a rating are split too.
        test_fraction: float. In (0, 1).
        seed: int. Seed of ``np.random.default_rng``; the same seed gives the same split.

    Returns:
        RatingSplit named ``random-{test_fraction}-seed{seed}``; both parts in file order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n = len(interactions)
    num_test = int(round(test_fraction * n))
    if not 0 < num_test < n:
        raise ValueError(f"test_fraction={test_fraction} of {n} interactions leaves an empty "
                         f"{'test' if num_test == 0 else 'train'} part")
    is_test = np.zeros(n, dtype=bool)
    is_test[np.random.default_rng(seed).choice(n, size=num_test, replace=False)] = True
    return RatingSplit(f"random-{test_fraction:g}-seed{seed}", interactions.take(np.flatnonzero(~is_test)),
                       interactions.take(np.flatnonzero(is_test)))


def leave_one_out_rating_split(split: LeaveOneOutSplit) -> RatingSplit:
    """The main job's rating table as a :class:`RatingSplit` (named ``leave-one-out``): test =
    each evaluated user's test target (their newest event), train = every event before it
    (validation targets included: what the main job's biased baseline is fitted on); raw ids,
    each part oldest first per user. Unrated events stay (NaN) — rating models skip them."""
    def part(users, positions):
        rows = [(split.user_ids[u], split.item_vocab[split.sequences[u][p]], split.timestamps[u][p],
                 split.ratings[u][p]) for u, p in zip(users, positions)]
        return Interactions.from_rows(*zip(*rows)) if rows else Interactions.from_rows([], [], [], [])

    train = split.train_sequences(True)
    users = np.repeat(np.arange(split.num_users), [len(s) for s in train])
    positions = np.concatenate([np.arange(len(s)) for s in train]) if train else np.zeros(0, int)
    last = np.array([len(split.sequences[u]) - 1 for u in split.evaluated], dtype=int)
    return RatingSplit("leave-one-out", part(users, positions), part(split.evaluated, last))
