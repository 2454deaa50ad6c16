"""Full-ranking evaluation: the project's protocol, in one place.

For each evaluated user every catalogue item is scored; the items of the user's input
history are removed from the ranking (never the target), and the target's rank gives

* ``HR@K``   = P(rank < K),
* ``NDCG@K`` = E[1 / log2(rank + 2)] if rank < K else 0,
* ``MRR``    = E[1 / (rank + 1)] (untruncated),

averaged over users. Ties between the target and other items are credited their
expected value under random tie-breaking: with ``g`` items scored strictly above the
target and ``e`` items scored equal to it, the rank is uniform on ``g .. g + e``. So a
constant-score model gets the metrics of a random ranking, not a perfect one.

A secondary "sampled" table ranks the target among ``num_negatives`` items drawn
without replacement (fixed seed) from the items the user never interacted with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from tfrec_attn.data.splits import LeaveOneOutSplit

logger = logging.getLogger(__name__)

DEFAULT_KS = (10, 50)


def _prefix(values: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(values)])


class _Gains:
    """Prefix sums of per-rank gains so expected metrics over a tie range are O(1)."""

    def __init__(self, size: int, ks):
        ranks = np.arange(size + 1, dtype=np.float64)
        discount = 1.0 / np.log2(ranks + 2.0)
        self.ndcg = {k: _prefix(np.where(ranks < k, discount, 0.0)) for k in ks}
        self.rr = _prefix(1.0 / (ranks + 1.0))
        self.ks = ks

    def expected(self, greater: np.ndarray, equal: np.ndarray) -> dict[str, np.ndarray]:
        """Per-user expected metrics when rank ~ Uniform{greater .. greater + equal}."""
        greater = greater.astype(np.int64)
        span = equal.astype(np.int64) + 1
        out = {}
        for k in self.ks:
            out[f"HR@{k}"] = np.clip(k - greater, 0, span) / span
            out[f"NDCG@{k}"] = (self.ndcg[k][greater + span] - self.ndcg[k][greater]) / span
        out["MRR"] = (self.rr[greater + span] - self.rr[greater]) / span
        return out


def rank_counts(scores: np.ndarray, targets: np.ndarray, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """Items strictly above and tied with each row's target, ignoring excluded items.

    Args:
        scores: float array [users, items].
        targets: int array [users]. Column of each row's target.
        exclude: list of int arrays (one per row) of items removed from the ranking;
            the target is never removed even when listed.

    Returns:
        (greater, equal): int arrays [users]; ``equal`` does not count the target itself.
    """
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):  # float32 stays float32: half the memory traffic,
        scores = scores.astype(np.float64)           # the same order and ties
    if scores.ndim != 2 or len(targets) != scores.shape[0]:
        raise ValueError(f"scores must be [users, items] with one target per row; got {scores.shape} "
                         f"and {len(targets)} targets")
    if not np.all(np.isfinite(scores)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(scores), axis=1))[0])
        raise ValueError(f"scores contain NaN or inf (first in row {bad}); a model producing "
                         "non-finite scores cannot be ranked")
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets]
    above = scores > target_scores[:, None]
    tied = scores == target_scores[:, None]
    tied[rows, targets] = False
    if exclude is not None:
        lengths = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=len(exclude))
        if lengths.sum():
            r = np.repeat(rows, lengths)
            c = np.concatenate([np.asarray(e, np.int64) for e in exclude])
            keep = c != targets[r]
            above[r[keep], c[keep]] = False
            tied[r[keep], c[keep]] = False
    return above.sum(axis=1), tied.sum(axis=1)


def without_history(scores, histories) -> np.ndarray:
    """A float64 copy of ``scores`` [users, ..., items] (e.g. [users, interests, items]) with
    each user's history items at -inf (the protocol never recommends what the user already has)."""
    masked = np.array(scores, np.float64, copy=True)
    for row, history in enumerate(histories):
        masked[row, ..., np.asarray(history, np.int64)] = -np.inf
    return masked


def full_ranking_metrics(scores, targets, exclude=None, ks=DEFAULT_KS) -> dict[str, np.ndarray]:
    """Per-user full-ranking metrics (see module docstring). Returns arrays [users]."""
    greater, equal = rank_counts(scores, np.asarray(targets), exclude)
    return _Gains(np.asarray(scores).shape[1], ks).expected(greater, equal)


def topk_metrics(topk, targets, exclude=None, ks=DEFAULT_KS) -> tuple[dict[str, np.ndarray], int]:
    """Per-user metrics from a model's ranked top-K lists (no scores, so no tie credit).

    Items of ``exclude`` found in a list are dropped from it (the protocol ranks
    without the history); MRR is truncated at the list length.

    Returns:
        (metrics, violations): per-user arrays, and how many history items the lists held.
    """
    topk = np.asarray(topk)
    targets = np.asarray(targets)
    violations = 0
    positions = np.full(len(targets), np.iinfo(np.int64).max // 4, dtype=np.int64)
    for row, (items, target) in enumerate(zip(topk, targets)):
        if exclude is not None and len(exclude[row]):
            drop = np.isin(items, exclude[row]) & (items != target)
            violations += int(drop.sum())
            items = items[~drop]
        hit = np.flatnonzero(items == target)
        if len(hit):
            positions[row] = hit[0]
    max_k = topk.shape[1] if topk.ndim == 2 else 0
    for k in ks:
        if k > max_k:
            raise ValueError(f"top-K lists have {max_k} items; cannot compute HR@{k}")
    found = positions < max_k
    out = {}
    for k in ks:
        out[f"HR@{k}"] = (positions < k).astype(np.float64)
        out[f"NDCG@{k}"] = np.where(positions < k, 1.0 / np.log2(np.minimum(positions, k) + 2.0), 0.0)
    out["MRR"] = np.where(found, 1.0 / (np.minimum(positions, max_k) + 1.0), 0.0)
    return out, violations


def sample_negatives(histories: list, num_items: int, num_negatives: int, seed: int) -> np.ndarray:
    """For each user, ``num_negatives`` distinct items never in their history (fixed seed)."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(histories), num_negatives), dtype=np.int64)
    for row, seen in enumerate(histories):
        seen = np.unique(seen)
        pool = num_items - len(seen)
        if pool < num_negatives:
            raise ValueError(f"user row {row} has only {pool} never-interacted items; "
                             f"cannot draw {num_negatives} negatives")
        # Draw ranks among the unseen items, then map rank -> item id (exact, no rejection).
        ranks = np.sort(rng.choice(pool, size=num_negatives, replace=False))
        out[row] = ranks + np.searchsorted(seen - np.arange(len(seen)), ranks, side="right")
    return out


def sampled_metrics(candidate_scores, ks=(10,)) -> dict[str, np.ndarray]:
    """Per-user metrics where column 0 of ``candidate_scores`` is the target."""
    candidate_scores = np.asarray(candidate_scores, dtype=np.float64)
    targets = np.zeros(len(candidate_scores), dtype=np.int64)
    greater, equal = rank_counts(candidate_scores, targets)
    return _Gains(candidate_scores.shape[1], ks).expected(greater, equal)


ScoreFn = Callable[[np.ndarray, list], np.ndarray]


class Evaluator:
    """Runs the protocol for one stage of a :class:`LeaveOneOutSplit`.

    Args:
        split: LeaveOneOutSplit.
        stage: str. ``"validation"`` (input = train part) or ``"test"`` (train + validation).
        ks: tuple of int. Cut-offs for HR/NDCG.
        num_negatives: int. Negatives per user for the sampled table (0 to skip).
        seed: int. Seed of the negative sampler.
        users: optional int array. Evaluate only these users (a subset of
            ``split.evaluated``, e.g. the cold-start protocol's cold or warm users).

    Example:
        >>> evaluator = Evaluator(split, "test")
        >>> evaluator.evaluate(lambda users, histories: my_scores[users])["NDCG@10"]
    """

    def __init__(self, split: LeaveOneOutSplit, stage: str, ks=DEFAULT_KS,
                 num_negatives: int = 100, seed: int = 2024, users=None):
        self.split = split
        self.stage = stage
        self.ks = tuple(ks)
        self.users = split.evaluated
        self.histories = split.inputs(stage)
        self.targets = split.targets(stage)
        if users is not None:
            keep = np.isin(self.users, users)
            if keep.sum() != len(np.unique(users)):
                raise ValueError("users must be a subset of split.evaluated")
            self.users = self.users[keep]
            self.histories = [h for h, k in zip(self.histories, keep) if k]
            self.targets = self.targets[keep]
        self.num_negatives = num_negatives
        self._negatives = None
        self._seed = seed

    @property
    def negatives(self) -> np.ndarray | None:
        """Sampled negatives per user; None when some user has too few unseen items."""
        if self._negatives is None and self.num_negatives:
            every = [self.split.sequences[u] for u in self.users]
            most_seen = max((len(np.unique(s)) for s in every), default=0)
            if self.split.num_items - most_seen < self.num_negatives:
                logger.warning("sampled metrics skipped: a user has fewer than %d never-interacted "
                               "items in a catalogue of %d", self.num_negatives, self.split.num_items)
                self.num_negatives = 0
                return None
            self._negatives = sample_negatives(every, self.split.num_items, self.num_negatives, self._seed)
        return self._negatives

    def evaluate(self, score_fn: ScoreFn, batch_size: int = 512, sampled: bool = True) -> dict[str, float]:
        """Scores users in batches with ``score_fn(user_indices, histories) -> [b, num_items]``."""
        per_user: dict[str, list] = {}
        sampled_rows: dict[str, list] = {}
        for start in range(0, len(self.users), batch_size):
            stop = min(start + batch_size, len(self.users))
            users = self.users[start:stop]
            histories = self.histories[start:stop]
            scores = np.asarray(score_fn(users, histories))
            if scores.shape != (len(users), self.split.num_items):
                raise ValueError(f"score_fn returned shape {scores.shape}; expected "
                                 f"({len(users)}, {self.split.num_items})")
            targets = self.targets[start:stop]
            for name, values in full_ranking_metrics(scores, targets, histories, self.ks).items():
                per_user.setdefault(name, []).append(values)
            if sampled and self.negatives is not None:
                cand = np.concatenate([targets[:, None], self.negatives[start:stop]], axis=1)
                picked = np.take_along_axis(scores, cand, axis=1)
                for name, values in sampled_metrics(picked).items():
                    sampled_rows.setdefault(name, []).append(values)
        result = {name: float(np.mean(np.concatenate(v))) for name, v in per_user.items()}
        result.update({f"sampled_{name}": float(np.mean(np.concatenate(v)))
                       for name, v in sampled_rows.items() if name != "MRR"})
        result["users"] = len(self.users)
        return result

    def evaluate_topk(self, topk_fn, batch_size: int = 512) -> dict[str, float]:
        """Evaluates ranked lists ``topk_fn(user_indices, histories) -> [b, K] item indices``.

        Cut-offs above K are left out; MRR is truncated at K. Items outside the catalogue
        may be marked -1.
        """
        per_user: dict[str, list] = {}
        violations = 0
        for start in range(0, len(self.users), batch_size):
            stop = min(start + batch_size, len(self.users))
            topk = np.asarray(topk_fn(self.users[start:stop], self.histories[start:stop]))
            ks = tuple(k for k in self.ks if k <= topk.shape[1])  # HR@50 needs lists of >= 50
            metrics, bad = topk_metrics(topk, self.targets[start:stop], self.histories[start:stop], ks)
            violations += bad
            for name, values in metrics.items():
                per_user.setdefault(name, []).append(values)
        result = {name: float(np.mean(np.concatenate(v))) for name, v in per_user.items()}
        result["users"] = len(self.users)
        result["history_items_returned"] = violations
        return result


def format_table(rows: dict[str, dict[str, float]], columns=("HR@10", "NDCG@10", "HR@50", "MRR")) -> str:
    """A fixed-width metric table, one row per model."""
    width = max([len("model")] + [len(name) for name in rows])
    cw = [max(8, len(c)) for c in columns]
    lines = [f"{'model':<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, cw))]
    for name, metrics in rows.items():
        cells = "  ".join(f"{metrics[c]:>{w}.4f}" if c in metrics else f"{'-':>{w}}"
                          for c, w in zip(columns, cw))
        lines.append(f"{name:<{width}}  {cells}")
    return "\n".join(lines)
