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


@pytest.mark.parametrize("stage", ["test", "validation"])
def test_the_cold_split_removes_every_cold_interaction_but_the_stage_targets(stage):
    """Cold items = the ``stage`` targets of the drawn users; none of their interactions is left
    to train on or in an input history, and every evaluated user keeps the stage's target (and,
    for the validation stage, the test target after it)."""
    split = leave_one_out(planted_sequences(num_items=60, num_users=200).interactions)
    cold = cold_start_split(split, 0.2, seed=1, stage=stage)
    new = cold.split
    is_cold = np.isin(np.arange(split.num_items), cold.cold_items)
    drawn_targets = set(split.targets(stage).tolist())
    assert 0 < len(cold.cold_items) and set(cold.cold_items.tolist()) <= drawn_targets
    assert not any(is_cold[seq].any() for seq in new.train_sequences())
    keep = 2 if stage == "validation" else 1
    for u in new.evaluated:
        assert not is_cold[new.sequences[u][:-keep]].any()
        np.testing.assert_array_equal(new.sequences[u][-keep:], split.sequences[u][-keep:])
    targets = new.targets(stage)
    np.testing.assert_array_equal(np.sort(np.concatenate([cold.cold_users, cold.warm_users])), new.evaluated)
    assert is_cold[targets[np.isin(new.evaluated, cold.cold_users)]].all()
    assert not is_cold[targets[np.isin(new.evaluated, cold.warm_users)]].any()
    assert cold.removed == sum(len(a) for a in split.sequences) - sum(len(a) for a in new.sequences) > 0
    with pytest.raises(ValueError, match="stage must be one of"):
        cold_start_split(split, 0.2, stage="train")


def test_a_pseudo_cold_split_of_a_cold_split_keeps_both_sets_of_items_unknown():
    """The ensemble draws its pseudo-cold items (validation targets) from the split it trains
    on, itself the protocol's cold split: neither set is left to train on or in the vocabulary
    of a model trained there, though the pseudo-cold items remain validation targets."""
    split = leave_one_out(planted_sequences(num_items=60, num_users=200).interactions)
    cold = cold_start_split(split, 0.2)
    pseudo = cold_start_split(cold.split, 0.2, seed=4, stage="validation")
    unknown = np.union1d(cold.cold_items, pseudo.cold_items)
    assert not np.isin(pseudo.split.training_items(include_validation=True), unknown).any()
    assert np.isin(pseudo.cold_items, pseudo.split.targets("validation")).all()
    assert set(cold.split.training_items(include_validation=True)) - set(pseudo.split.training_items()) == \
        set(pseudo.cold_items.tolist()) - set(cold.cold_items.tolist())
