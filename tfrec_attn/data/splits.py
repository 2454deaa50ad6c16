"""The project's leave-one-out split (every later baseline is measured with it).

* every interaction row is one implicit positive (ratings are kept, never filtered on);
* per user, rows are sorted by timestamp, ties kept in file order (stable sort);
* the last row is the test target, the second-to-last the validation target, the
  rest is train; users with fewer than ``min_interactions`` rows go wholly to train
  and are not evaluated;
* validation input = the train part; test input = train + validation.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfrec_attn.data.dataset import Interactions

STAGES = ("validation", "test")
TARGET_OFFSETS = {"validation": -2, "test": -1}  # where each stage's target sits in an evaluated sequence


@dataclasses.dataclass
class LeaveOneOutSplit:
    """Chronological per-user sequences and the leave-one-out targets.

    Attributes:
        item_vocab: np.ndarray of str, [num_items]. Item index -> raw id: the catalogue,
            most frequent first (ties in order of first appearance).
        user_ids: np.ndarray of str, [num_users]. User index -> raw id.
        sequences: list of np.ndarray of int, item indices per user, oldest first.
        timestamps: list of np.ndarray of int64, aligned with ``sequences``.
        ratings: list of np.ndarray of float32, aligned with ``sequences``.
        evaluated: np.ndarray of int. Indices of users with a validation and a test target.
        new_items: np.ndarray of int or None. Catalogue indices a model trained on this split
            must not know by id even where they are validation targets (a pseudo-cold split's
            items: scored from their text, as a new item is).
    """

    item_vocab: np.ndarray
    user_ids: np.ndarray
    sequences: list
    timestamps: list
    ratings: list
    evaluated: np.ndarray
    new_items: np.ndarray | None = None

    @property
    def num_items(self) -> int:
        return len(self.item_vocab)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def _cut(self, user: int, stage: str | None) -> int:
        """Length of the user's prefix that is visible at ``stage`` (None = training)."""
        n = len(self.sequences[user])
        if stage is None:
            return n - 2 if self._is_evaluated[user] else n
        if stage == "validation":
            return n - 2
        if stage == "test":
            return n - 1
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")

    @property
    def _is_evaluated(self) -> np.ndarray:
        mask = np.zeros(self.num_users, bool)
        mask[self.evaluated] = True
        return mask

    def train_sequences(self, include_validation: bool = False) -> list:
        """Per user (all users), the item indices the model may train on.

        ``include_validation``: also the validation targets (everything a model may see
        before the test: for a final refit once hyperparameters are chosen).
        """
        return self.train_part("sequences", include_validation)

    def train_part(self, field: str = "sequences", include_validation: bool = False) -> list:
        """Like :meth:`train_sequences` for ``sequences``, ``timestamps`` or ``ratings``."""
        is_eval = self._is_evaluated
        cut = 1 if include_validation else 2
        return [s[:-cut] if is_eval[u] else s for u, s in enumerate(getattr(self, field))]

    def holding_out(self, events: int, min_interactions: int = 3) -> LeaveOneOutSplit:
        """The split a model trains on so that each user's newest ``events`` training events
        stay unseen (a stacked model's features for them are then honest, as for the
        validation and test targets): every user's train part ends ``events`` earlier, its
        validation and test targets are the first two held-out events (users with too
        few events go wholly to train, cut the same way). Same catalogue and users."""
        if events < 2:
            raise ValueError(f"events must be >= 2 (the held-out split's validation and test targets), got {events}")
        sequences, timestamps, ratings, evaluated = [], [], [], []
        for user, seq in enumerate(self.sequences):
            kept = self._cut(user, None) - events  # the train part of the held-out split
            if kept >= 1 and kept + 2 >= min_interactions and self._is_evaluated[user]:
                evaluated.append(user)
                kept += 2
            kept = max(kept, 0)
            sequences.append(seq[:kept])
            timestamps.append(self.timestamps[user][:kept])
            ratings.append(self.ratings[user][:kept])
        return LeaveOneOutSplit(self.item_vocab, self.user_ids, sequences, timestamps, ratings,
                                np.asarray(evaluated, np.int64))

    def inputs(self, stage: str) -> list:
        """For each evaluated user, the history given to the model at ``stage``."""
        return [self.sequences[u][: self._cut(u, stage)] for u in self.evaluated]

    def targets(self, stage: str) -> np.ndarray:
        """For each evaluated user, the held-out item index at ``stage``."""
        if stage not in TARGET_OFFSETS:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        return np.array([self.sequences[u][TARGET_OFFSETS[stage]] for u in self.evaluated], dtype=np.int64)

    def train_item_counts(self) -> np.ndarray:
        """Interactions per item in the training part (MostPop's scores, logQ's prior)."""
        train = self.train_sequences()
        flat = np.concatenate(train) if train else np.zeros(0, np.int64)
        return np.bincount(flat, minlength=self.num_items)

    def training_items(self, include_validation: bool = True) -> np.ndarray:
        """Catalogue indices (catalogue order) of the items that occur in the training part:
        the items a model trained on this split knows by id (its vocabulary)."""
        counts = np.bincount(np.concatenate(self.train_sequences(include_validation) or [np.zeros(0, np.int64)]),
                             minlength=self.num_items)
        if self.new_items is not None:
            counts[self.new_items] = 0
        return np.flatnonzero(counts > 0)

    def counts(self) -> dict:
        train_rows = sum(len(s) for s in self.train_sequences())
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": int(sum(len(s) for s in self.sequences)),
            "evaluated_users": len(self.evaluated),
            "train_rows": int(train_rows),
            "validation_targets": len(self.evaluated),
            "test_targets": len(self.evaluated),
        }


def leave_one_out(interactions: Interactions, min_interactions: int = 3) -> LeaveOneOutSplit:
    """Splits an interaction log with the project's protocol (see the module docstring)."""
    if min_interactions < 3:
        raise ValueError(f"min_interactions must be >= 3 (train + validation + test), got {min_interactions}")
    n = len(interactions)
    if n == 0:
        raise ValueError("no interactions to split")
    user_vocab, user_codes = np.unique(interactions.user_ids, return_inverse=True)
    raw_items, first_seen, item_codes, item_counts = np.unique(
        interactions.item_ids, return_index=True, return_inverse=True, return_counts=True)
    # Catalogue order: most frequent first, ties by first appearance in the file.
    order = np.lexsort((first_seen, -item_counts))
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    item_vocab = raw_items[order]
    item_index = remap[item_codes]

    # Stable chronological order within each user: sort keys are (user, time, row).
    rows = np.lexsort((np.arange(n), interactions.timestamps, user_codes))
    boundaries = np.flatnonzero(np.diff(user_codes[rows])) + 1
    seq = np.split(item_index[rows].astype(np.int64), boundaries)
    ts = np.split(interactions.timestamps[rows], boundaries)
    rt = np.split(interactions.ratings[rows], boundaries)
    lengths = np.array([len(s) for s in seq])
    evaluated = np.flatnonzero(lengths >= min_interactions)
    return LeaveOneOutSplit(item_vocab=item_vocab, user_ids=user_vocab, sequences=seq,
                            timestamps=ts, ratings=rt, evaluated=evaluated)
