"""The cold-start protocol: items the model never sees except through their text.

Cold items = the distinct test targets of a seeded random ``fraction`` of the evaluated
users (seed 0). Every interaction with a cold item is removed from training, validation
and every input history; the test targets stay. The cold figures are the test events
whose target is cold (ranked over the whole catalogue, cold items included, history
excluded: the project's full-ranking protocol); the remaining test users give the warm
figures of the same run. The same code scores every model (a ``score_fn``).

    >>> cold = cold_start_split(split)
    >>> model = train(config, dataset, out, split=cold.split).model  # never sees cold items
    >>> evaluate_cold_start(cold, score_fn)  # {"cold": {...}, "warm": {...}}
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfrec_attn.data.splits import LeaveOneOutSplit

COLD_METRICS = ("HR@10", "NDCG@10", "HR@50")


@dataclasses.dataclass
class ColdStartSplit:
    """Attributes:
        split: LeaveOneOutSplit with every cold interaction removed, except the test targets.
        cold_items: int array. Catalogue indices of the cold items.
        cold_users: int array. Evaluated users (of ``split``) whose test target is cold.
        warm_users: int array. The other evaluated users.
        removed: int. Interactions removed.
    """

    split: LeaveOneOutSplit
    cold_items: np.ndarray
    cold_users: np.ndarray
    warm_users: np.ndarray
    removed: int

    def summary(self) -> dict:
        return {"cold_items": len(self.cold_items), "cold_users": len(self.cold_users),
                "warm_users": len(self.warm_users), "removed_interactions": self.removed}


def cold_start_split(split: LeaveOneOutSplit, fraction: float = 0.2, seed: int = 0,
                     min_interactions: int = 3) -> ColdStartSplit:
    """The protocol's split of ``split`` (see the module docstring)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    drawn = rng.choice(split.evaluated, size=max(1, round(fraction * len(split.evaluated))), replace=False)
    cold = np.unique([split.sequences[u][-1] for u in drawn])
    is_cold = np.zeros(split.num_items, bool)
    is_cold[cold] = True
    evaluated = set(split.evaluated.tolist())
    sequences, timestamps, ratings, still_evaluated = [], [], [], []
    removed = 0
    for u, seq in enumerate(split.sequences):
        keep = ~is_cold[seq]
        if u in evaluated:
            keep[-1] = True  # the test target stays, cold or not
        removed += int((~keep).sum())
        sequences.append(seq[keep])
        timestamps.append(split.timestamps[u][keep])
        ratings.append(split.ratings[u][keep])
        if u in evaluated and keep.sum() >= min_interactions:
            still_evaluated.append(u)
    new = LeaveOneOutSplit(item_vocab=split.item_vocab, user_ids=split.user_ids, sequences=sequences,
                           timestamps=timestamps, ratings=ratings,
                           evaluated=np.asarray(still_evaluated, np.int64))
    targets = new.targets("test")
    cold_target = is_cold[targets]
    return ColdStartSplit(split=new, cold_items=cold, cold_users=new.evaluated[cold_target],
                          warm_users=new.evaluated[~cold_target], removed=removed)


def evaluate_cold_start(cold: ColdStartSplit, score_fn) -> dict:
    """``{"cold": metrics, "warm": metrics}`` of ``score_fn`` on the test stage, each with
    HR@10 / NDCG@10 / HR@50 / MRR and the number of ``users``."""
    from tfrec_attn.evaluation.protocol import Evaluator

    return {part: Evaluator(cold.split, "test", users=users).evaluate(score_fn, sampled=False)
            for part, users in (("cold", cold.cold_users), ("warm", cold.warm_users))}
