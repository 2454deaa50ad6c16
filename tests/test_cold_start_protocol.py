"""The cold-start protocol's figures: cold / warm as the full-ranking protocol scores each
subset, the warm targets with and without the cold items in the catalogue, and the
calibration of new items' top-10 appearances against how often they are wanted."""

import numpy as np
import pytest

from tfrec_attn.data import leave_one_out
from tfrec_attn.data.synthetic import planted_sequences
from tfrec_attn.evaluation import Evaluator, cold_start_split, evaluate_cold_start


@pytest.fixture(scope="module")
def cold():
    return cold_start_split(leave_one_out(planted_sequences(num_items=60, num_users=200).interactions), 0.2)


def scorer(cold, cold_bonus=0.0, oracle=True, seed=0):
    """Random scores, the test target lifted (``oracle``), cold items shifted by ``cold_bonus``."""
    rng = np.random.default_rng(seed)
    split = cold.split
    target_of = dict(zip(split.evaluated.tolist(), split.targets("test").tolist()))
    is_cold = np.isin(np.arange(split.num_items), cold.cold_items)

    def score(users, histories):
        scores = rng.normal(size=(len(users), split.num_items))
        if oracle:
            scores[np.arange(len(users)), [target_of[int(u)] for u in users]] += 10.0
        return scores + cold_bonus * is_cold

    return score


def test_cold_and_warm_figures_are_the_protocol_on_each_subset(cold):
    table = np.random.default_rng(5).normal(size=(len(cold.split.user_ids), cold.split.num_items))
    fixed = evaluate_cold_start(cold, lambda users, histories: table[users])
    for part, users in (("cold", cold.cold_users), ("warm", cold.warm_users)):
        expected = Evaluator(cold.split, "test", users=users).evaluate(lambda u, h: table[u], sampled=False)
        assert fixed[part]["users"] == len(users) > 0
        for name in ("HR@10", "NDCG@10", "HR@50", "MRR", "users"):
            assert fixed[part][name] == pytest.approx(expected[name]), (part, name)


def test_new_items_pushed_up_cost_the_warm_targets_and_show_in_the_calibration(cold):
    fair = evaluate_cold_start(cold, scorer(cold))
    pushed = evaluate_cold_start(cold, scorer(cold, cold_bonus=20.0))
    buried = evaluate_cold_start(cold, scorer(cold, cold_bonus=-20.0))
    # The oracle puts every target first: with fair scores, cold and warm targets are hits.
    assert fair["cold"]["HR@10"] == fair["warm"]["HR@10"] == 1.0
    # Cold items lifted above everything push the warm targets out of the top 10 ...
    assert pushed["warm"]["NDCG@10"] < 0.5 * fair["warm"]["NDCG@10"]
    # ... which the warm figures without the cold items do not see.
    assert pushed["warm_without_cold"]["NDCG@10"] == pytest.approx(fair["warm_without_cold"]["NDCG@10"])
    assert fair["warm_without_cold"]["HR@10"] == 1.0
    # Calibration: appearances per wanted occurrence, cold vs warm.
    c = pushed["calibration"]
    users = len(cold.split.evaluated)
    assert c["cold_targets"] == len(cold.cold_users) and c["warm_targets"] == len(cold.warm_users)
    assert c["cold_appearances"] + c["warm_appearances"] == 10 * users
    assert c["cold_appearances"] == users * min(10, len(cold.cold_items))  # cold items fill every list
    assert c["cold_to_warm"] > 2.0
    assert buried["calibration"]["cold_appearances"] == 0  # below every unseen known item (60 > 10 + history)
    assert buried["calibration"]["cold_to_warm"] == 0.0
    assert buried["cold"]["HR@10"] == 0.0  # ranked below every known item
    assert 0.5 <= fair["calibration"]["cold_to_warm"] <= 2.0
