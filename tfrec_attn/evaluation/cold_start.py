"""The cold-start protocol: items the model never sees except through their text.

Cold items = the distinct test targets of a seeded random ``fraction`` of the evaluated
users (seed 0). Every interaction with a cold item is removed from training, validation
and every input history; the test targets stay. The cold figures are the test events
whose target is cold (ranked over the whole catalogue, cold items included, history
excluded: the project's full-ranking protocol); the remaining test users give the warm
figures of the same run. The same code scores every model (a ``score_fn``), in one pass
over the evaluated users, and also reports:

* ``warm_without_cold``: the warm users ranked over the catalogue less the cold items. Beside
  ``warm`` (cold items present) it shows what the new items cost known targets: a model that
  scores new items too high pushes the warm targets down;
* ``calibration``: over every evaluated user's top ``k`` (history excluded), the appearances
  of cold and of warm items, each divided by how often such an item is a test target
  (``cold_ratio``, ``warm_ratio``), and their quotient ``cold_to_warm``: 1 = new items are
  recommended as often as they are wanted, relative to known ones; far below 1, buried;
  far above, pushed.

    >>> cold = cold_start_split(split)
    >>> model = train(config, dataset, out, split=cold.split).model  # never sees cold items
    >>> evaluate_cold_start(cold, score_fn)  # {"cold", "warm", "warm_without_cold", "calibration"}
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfrec_attn.data.splits import STAGES, TARGET_OFFSETS, LeaveOneOutSplit

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
                     min_interactions: int = 3, stage: str = "test") -> ColdStartSplit:
    """The protocol's split of ``split`` (see the module docstring).

    ``stage="validation"`` draws the cold items from the validation targets instead (a
    pseudo-cold split for choosing how new items are scored, test untouched): every evaluated
    user keeps its validation and test targets, and the cold/warm users are those of the
    validation stage."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if stage not in TARGET_OFFSETS:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    place = -TARGET_OFFSETS[stage]
    rng = np.random.default_rng(seed)
    drawn = rng.choice(split.evaluated, size=max(1, round(fraction * len(split.evaluated))), replace=False)
    cold = np.unique([split.sequences[u][-place] for u in drawn])
    is_cold = np.zeros(split.num_items, bool)
    is_cold[cold] = True
    if split.new_items is not None:  # a cold split of a cold split: its new items stay new
        is_cold[split.new_items] = True
    evaluated = set(split.evaluated.tolist())
    sequences, timestamps, ratings, still_evaluated = [], [], [], []
    removed = 0
    for u, seq in enumerate(split.sequences):
        keep = ~is_cold[seq]
        if u in evaluated:
            kept_targets = keep.copy()
            kept_targets[-place:] = True  # the stage's targets stay, cold or not ...
            if kept_targets.sum() >= min_interactions:
                keep = kept_targets
                still_evaluated.append(u)
            # ... unless too little is left to evaluate the user: then they would be trained on
        removed += int((~keep).sum())
        sequences.append(seq[keep])
        timestamps.append(split.timestamps[u][keep])
        ratings.append(split.ratings[u][keep])
    new = LeaveOneOutSplit(item_vocab=split.item_vocab, user_ids=split.user_ids, sequences=sequences,
                           timestamps=timestamps, ratings=ratings,
                           evaluated=np.asarray(still_evaluated, np.int64),
                           new_items=np.flatnonzero(is_cold))
    cold_target = np.isin(new.targets(stage), cold)
    return ColdStartSplit(split=new, cold_items=cold, cold_users=new.evaluated[cold_target],
                          warm_users=new.evaluated[~cold_target], removed=removed)


def evaluate_cold_start(cold: ColdStartSplit, score_fn, k: int = 10, batch_size: int = 512) -> dict:
    """The protocol's figures of ``score_fn`` on the test stage (module docstring):
    ``cold``, ``warm`` and ``warm_without_cold`` (HR@10 / NDCG@10 / HR@50 / MRR and the number
    of ``users``) and ``calibration`` (top-``k`` appearances per test-target occurrence)."""
    from tfrec_attn.evaluation.protocol import Evaluator, full_ranking_metrics

    evaluator = Evaluator(cold.split, "test", num_negatives=0)
    users, histories, targets = evaluator.users, evaluator.histories, evaluator.targets
    is_cold = np.zeros(cold.split.num_items, bool)
    is_cold[cold.cold_items] = True
    cold_user = np.isin(users, cold.cold_users)
    per_user: dict[str, dict[str, list]] = {"cold": {}, "warm": {}, "warm_without_cold": {}}
    appearances = {"cold": 0, "warm": 0}
    for start in range(0, len(users), batch_size):
        rows = slice(start, start + batch_size)
        batch_histories = histories[rows]
        scores = np.asarray(score_fn(users[rows], batch_histories), np.float64)
        metrics = full_ranking_metrics(scores, targets[rows], batch_histories)
        known = scores.copy()
        known[:, is_cold] = known.min() - 1.0  # the catalogue less the cold items (ranked below all)
        without = full_ranking_metrics(known, targets[rows], batch_histories)
        for name in metrics:
            per_user["cold"].setdefault(name, []).append(metrics[name][cold_user[rows]])
            per_user["warm"].setdefault(name, []).append(metrics[name][~cold_user[rows]])
            per_user["warm_without_cold"].setdefault(name, []).append(without[name][~cold_user[rows]])
        cold_shown, shown = top_k_appearances(scores, batch_histories, is_cold, k)
        appearances["cold"] += cold_shown
        appearances["warm"] += shown - cold_shown
    result = {}
    for part, values in per_user.items():
        count = int(sum(len(v) for v in next(iter(values.values()))))
        result[part] = {name: float(np.mean(np.concatenate(v))) if count else float("nan")
                        for name, v in values.items()}
        result[part]["users"] = count
    result["calibration"] = calibration(appearances["cold"], appearances["warm"], is_cold[targets], k)
    return result


def top_k_appearances(scores, histories, is_new, k: int = 10) -> tuple[int, int]:
    """(appearances of ``is_new`` items, of all items) in each user's top ``k`` of ``scores``
    [users, items], history excluded."""
    from tfrec_attn.evaluation.protocol import without_history

    masked = without_history(scores, histories)
    top = np.argpartition(-masked, min(k, masked.shape[1] - 1), axis=1)[:, :k]
    shown = np.isfinite(np.take_along_axis(masked, top, axis=1))
    return int((is_new[top] & shown).sum()), int(shown.sum())


def calibration(new_appearances: int, known_appearances: int, target_is_new, k: int = 10) -> dict:
    """The calibration figures: top-``k`` appearances of new (cold) and known (warm) items,
    each per test-target occurrence of such an item (``target_is_new``: bool per evaluated
    user), and their quotient ``cold_to_warm`` (1 = new items recommended as often as they
    are wanted, relative to known ones)."""
    wanted = {"cold": int(np.sum(target_is_new)), "warm": int(np.sum(~np.asarray(target_is_new)))}
    shown = {"cold": new_appearances, "warm": known_appearances}
    ratio = {part: shown[part] / wanted[part] if wanted[part] else float("nan") for part in wanted}
    return {
        "k": k, "cold_appearances": shown["cold"], "cold_targets": wanted["cold"], "cold_ratio": ratio["cold"],
        "warm_appearances": shown["warm"], "warm_targets": wanted["warm"], "warm_ratio": ratio["warm"],
        "cold_to_warm": ratio["cold"] / ratio["warm"] if ratio["warm"] else float("inf") if ratio["cold"] else
        float("nan")}
