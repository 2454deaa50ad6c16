import math

import numpy as np
import pytest

from tfrec_attn.evaluation import (
    full_ranking_metrics,
    sample_negatives,
    sampled_metrics,
    topk_metrics,
)

SCORES = np.array([[0.9, 0.5, 0.5, 0.7, 0.1, 0.5]])
L3 = 1 / math.log2(3)


def test_ties_get_expected_credit_and_history_is_excluded():
    # Items 0 and 3 (above the target) are history: removed. Items 2 and 5 tie with it,
    # so its rank is uniform on {0, 1, 2}.
    m = full_ranking_metrics(SCORES, [1], [[0, 3]], ks=(1, 2))
    assert m["HR@1"][0] == pytest.approx(1 / 3)
    assert m["HR@2"][0] == pytest.approx(2 / 3)
    assert m["NDCG@1"][0] == pytest.approx(1 / 3)
    assert m["NDCG@2"][0] == pytest.approx((1 + L3) / 3)
    assert m["MRR"][0] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_without_exclusion_the_history_outranks_the_target():
    m = full_ranking_metrics(SCORES, [1], None, ks=(2, 3))
    # Two items above, two tied: rank uniform on {2, 3, 4}.
    assert m["HR@2"][0] == 0.0
    assert m["HR@3"][0] == pytest.approx(1 / 3)
    assert m["NDCG@3"][0] == pytest.approx((1 / math.log2(4)) / 3)
    assert m["MRR"][0] == pytest.approx((1 / 3 + 1 / 4 + 1 / 5) / 3)


def test_target_is_never_excluded():
    m = full_ranking_metrics(SCORES, [1], [[1, 0]], ks=(1,))
    # Only item 0 removed: item 3 above, items 2 and 5 tied -> rank on {1, 2, 3}.
    assert m["MRR"][0] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    assert m["HR@1"][0] == 0.0


def test_constant_scores_are_not_flattered():
    n = 50
    m = full_ranking_metrics(np.zeros((3, n)), [0, 7, 49], None, ks=(10,))
    assert np.allclose(m["HR@10"], 10 / n)
    expected_ndcg = sum(1 / math.log2(r + 2) for r in range(10)) / n
    assert np.allclose(m["NDCG@10"], expected_ndcg)


def test_multiple_users_vectorised():
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    m = full_ranking_metrics(scores, [0, 0], [[], [3]], ks=(1, 3))
    assert m["HR@1"].tolist() == [1.0, 0.0]
    # User 1: item 3 excluded, items 2 and 1 above the target: rank 2.
    assert m["HR@3"].tolist() == [1.0, 1.0]
    assert m["NDCG@3"][1] == pytest.approx(1 / math.log2(4))
    assert m["MRR"].tolist() == pytest.approx([1.0, 1 / 3])


def test_non_finite_scores_rejected():
    with pytest.raises(ValueError, match="NaN or inf"):
        full_ranking_metrics(np.array([[0.1, np.nan]]), [0])


def test_topk_metrics_drop_history_and_count_it():
    metrics, violations = topk_metrics([[3, 1, 2], [4, 5, 6]], [1, 9], [[3], []], ks=(1, 2))
    assert violations == 1
    assert metrics["HR@1"].tolist() == [1.0, 0.0]
    assert metrics["MRR"].tolist() == [1.0, 0.0]
    metrics, _ = topk_metrics([[7, 8, 1]], [1], None, ks=(2, 3))
    assert metrics["HR@2"].tolist() == [0.0]
    assert metrics["NDCG@3"][0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cannot compute HR@10"):
        topk_metrics([[1, 2]], [1], None, ks=(10,))


def test_negative_sampling_is_exact_and_deterministic():
    histories = [np.array([0, 2, 4, 6, 8]), np.array([1, 3])]
    a = sample_negatives(histories, 12, 7, seed=3)
    b = sample_negatives(histories, 12, 7, seed=3)
    assert np.array_equal(a, b)
    for row, seen in zip(a, histories):
        assert len(set(row)) == 7 and not set(row) & set(seen.tolist())
        assert row.min() >= 0 and row.max() < 12
    # With exactly as many unseen items as requested, all of them are drawn.
    assert sorted(sample_negatives([histories[0]], 12, 7, seed=0)[0]) == [1, 3, 5, 7, 9, 10, 11]
    with pytest.raises(ValueError, match="cannot draw 8 negatives"):
        sample_negatives([histories[0]], 12, 8, seed=0)


def test_sampled_metrics_target_in_column_zero():
    m = sampled_metrics(np.array([[0.5, 0.9, 0.1, 0.5]]), ks=(1, 2))
    assert m["HR@1"][0] == 0.0
    assert m["HR@2"][0] == pytest.approx(0.5)
