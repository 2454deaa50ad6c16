import numpy as np
import pytest

from tfrec_attn.data import Interactions, leave_one_out


def test_ml100k_split_counts(ml100k_split):
    counts = ml100k_split.counts()
    assert counts["evaluated_users"] == 943
    assert counts["train_rows"] == 98_114
    assert counts["validation_targets"] == counts["test_targets"] == 943
    assert counts["items"] == 1682


def test_chronological_stable_leave_one_out():
    log = Interactions.from_rows(
        ["a", "b", "a", "a", "b", "a", "c", "c", "c"],
        ["i1", "i1", "i2", "i3", "i2", "i4", "i9", "i8", "i7"],
        [5, 1, 3, 5, 2, 9, 1, 1, 1],
        [1, 2, 3, 4, 5, 1, 2, 2, 2],
    )
    split = leave_one_out(log)
    vocab = split.item_vocab
    by_user = {u: vocab[s].tolist() for u, s in zip(split.user_ids, split.sequences)}
    # a: t=3 (i2), then the two t=5 rows in file order (i1 before i3), then t=9.
    assert by_user["a"] == ["i2", "i1", "i3", "i4"]
    assert by_user["c"] == ["i9", "i8", "i7"]  # all ties: file order
    assert split.user_ids[split.evaluated].tolist() == ["a", "c"]  # b has 2 rows: train only
    assert [vocab[s].tolist() for s in split.inputs("validation")] == [["i2", "i1"], ["i9"]]
    assert [vocab[s].tolist() for s in split.inputs("test")] == [["i2", "i1", "i3"], ["i9", "i8"]]
    assert vocab[split.targets("validation")].tolist() == ["i3", "i8"]
    assert vocab[split.targets("test")].tolist() == ["i4", "i7"]
    train = {u: vocab[s].tolist() for u, s in zip(split.user_ids, split.train_sequences())}
    assert train == {"a": ["i2", "i1"], "b": ["i1", "i2"], "c": ["i9"]}
    # Ratings travel with their rows through the sort.
    assert split.ratings[list(split.user_ids).index("a")].tolist() == [3, 1, 4, 1]
    # Most frequent item first in the catalogue (i1 and i2 appear twice).
    assert vocab[:2].tolist() == ["i1", "i2"]
    assert split.train_item_counts()[:2].tolist() == [2, 2]


def test_split_rejects_bad_arguments():
    log = Interactions.from_rows(["a"], ["i"], [1], [1])
    with pytest.raises(ValueError, match="min_interactions must be >= 3"):
        leave_one_out(log, min_interactions=2)
    with pytest.raises(ValueError, match="stage must be one of"):
        leave_one_out(log).targets("train")
    assert len(leave_one_out(log).evaluated) == 0
    assert np.array_equal(leave_one_out(log).train_item_counts(), [1])
