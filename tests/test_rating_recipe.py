"""The rating recipe (u1 benchmark): rows never see their own target, test-only items are OOV,
and the ranking model's rating head, trained by the engine, beats the biased baseline on
ratings with an interaction effect the baseline cannot express."""

import json
import os
import sys

import numpy as np
import pytest

from tfrec_attn.baselines import BiasedBaseline
from tfrec_attn.config import ConfigError, load_config
from tfrec_attn.data import Dataset, Interactions, Item, RatingSplit, User
from tfrec_attn.evaluation.rating import rating_metrics
from tfrec_attn.training import RatingRecipe, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["recipe=rating", "model.embedding_dim=16", "model.attention_units=[16]", "model.mlp_units=[32]",
        "model.max_len=40", "model.dropout=0.0", "model.normalization=softmax", "model.event_feature_dropout=0",
        "loss.rating_weight=1", "train.epochs=12", "train.batch_size=64", "train.reference_batch_size=64", "train.learning_rate=0.005",
        "train.patience=3", "train.steps_per_execution=4", "train.refit_with_validation=false"]


def planted_dataset(seed=0, num_users=160, num_items=60, per_user=30, new_items=3):
    """Ratings = 3 + user bias + item bias + 0.9 * (same taste group ? 1 : -1) + noise, rounded
    to 1..5; each user rates distinct items. The last 20% of each user's ratings (random
    order) are the test part, plus ratings of ``new_items`` items that never occur in training."""
    rng = np.random.default_rng(seed)
    user_bias, item_bias = rng.normal(0, 0.4, num_users), rng.normal(0, 0.5, num_items)
    user_group, item_group = rng.integers(0, 2, num_users), rng.integers(0, 2, num_items)
    rows, is_test = [], []
    for u in range(num_users):
        for k, i in enumerate(rng.choice(num_items, per_user, replace=False)):
            effect = 0.9 if user_group[u] == item_group[i] else -0.9
            rating = np.clip(np.round(3 + user_bias[u] + item_bias[i] + effect + rng.normal(0, 0.3)), 1, 5)
            rows.append((f"u{u}", f"i{i}", 1000 * u + int(rng.integers(0, 10 ** 6)), rating))
            is_test.append(k >= 0.8 * per_user)
    for k in range(new_items):
        rows.append((f"u{k}", f"new{k}", 10 ** 9 + k, 3.0))
        is_test.append(True)
    users, items, times, ratings = zip(*rows)
    interactions = Interactions.from_rows(users, items, times, ratings)
    is_test = np.asarray(is_test)
    split = RatingSplit("planted", interactions.take(np.flatnonzero(~is_test)),
                        interactions.take(np.flatnonzero(is_test)))
    genres = ("Drama", "Comedy")
    dataset = Dataset("planted", interactions,
                      {f"i{i}": Item(f"i{i}", f"Film {i}", (genres[i % 2],), 1990) for i in range(num_items)},
                      users={f"u{u}": User(f"u{u}", 20 + u % 40, "MF"[u % 2], "other", "12345")
                             for u in range(num_users)})
    return dataset, split


def biased_reference(split) -> dict:
    """The biased baseline's RMSE / MAE on ``split``'s test part, fitted on its training part."""
    baseline = BiasedBaseline().fit(split.train)
    return rating_metrics(baseline.predict(split.test.user_ids, split.test.item_ids), split.test.ratings)


def prepared(*overrides):
    dataset, split = planted_dataset()
    config = load_config(None, TINY + list(overrides))
    recipe = RatingRecipe(config, dataset, split)
    recipe.prepare(None)
    return recipe


def user_profiles(recipe, history):
    """{user index: sorted model indices of its training ratings in ``history``}."""
    return {u: np.sort(recipe.train_items[(recipe.train_users == u) & history])
            for u in np.unique(recipe.train_users)}


def test_a_row_reads_the_users_other_ratings_and_never_its_target():
    recipe = prepared()
    train = recipe.split.train
    assert 0 < recipe.is_validation.sum() == round(0.05 * len(train))
    everything = np.ones(len(train), bool)
    for rows, history in [(recipe.rows(False), ~recipe.is_validation), (recipe.rows(True), everything),
                          (recipe.stage_rows("validation"), ~recipe.is_validation)]:
        profiles = user_profiles(recipe, history)
        assert not np.any(rows.history == rows.positive[:, None])  # the target is not in its own history
        for r in range(len(rows)):
            seen = np.sort(rows.history[r][rows.history[r] > 0])
            expected = profiles[rows.users[r]]
            np.testing.assert_array_equal(seen, expected[expected != rows.positive[r]])  # all the others
            assert np.all(rows.ratings[r][rows.history[r] > 0] >= 1) and np.all(rows.ratings[r][rows.history[r] == 0] == 0)
    assert len(recipe.rows(False)) == len(train) - recipe.is_validation.sum()
    assert len(recipe.rows(True)) == len(train)

    test = recipe.stage_rows("test")
    profiles = user_profiles(recipe, everything)
    for r in range(len(test)):  # a test row reads every training rating of its user
        np.testing.assert_array_equal(np.sort(test.history[r][test.history[r] > 0]), profiles[test.users[r]])
    new = np.char.startswith(recipe.split.test.item_ids.astype(str), "new")
    assert new.sum() == 3 and np.all(test.positive[new] == 1)  # test-only items are OOV, not an error
    np.testing.assert_array_equal(test.rating, recipe.split.test.ratings)


def test_history_keeps_the_newest_max_len_ratings_oldest_first():
    recipe = prepared("model.max_len=5")
    train = recipe.split.train
    rows = recipe.rows(True)
    r = 0
    user = rows.users[r]
    mine = np.flatnonzero((recipe.train_users == user) & (recipe.train_items != rows.positive[r]))
    newest = mine[np.argsort(train.timestamps[mine], kind="stable")][-5:]
    np.testing.assert_array_equal(rows.history[r], recipe.train_items[newest])
    np.testing.assert_array_equal(rows.ratings[r], train.ratings[newest].astype(np.int64))


def test_the_rating_head_beats_the_biased_baseline_and_stays_in_range(tmp_path):
    dataset, split = planted_dataset()
    config = load_config(None, TINY)
    result = train(config, dataset, str(tmp_path / "run"), split=split, verbose=0)
    test = result.metrics["test"]
    reference = biased_reference(split)
    assert test["baseline_RMSE"] == pytest.approx(reference["RMSE"])
    assert test["count"] == len(split.test) and test["oov_items"] == 3
    assert test["RMSE"] < 0.75 * reference["RMSE"], (test, reference)
    assert test["MAE"] < reference["MAE"]

    recipe = result.recipe
    predicted = recipe.predict_ratings(result.model, recipe.stage_rows("test"))
    assert test["RMSE"] == pytest.approx(rating_metrics(predicted, split.test.ratings)["RMSE"], rel=1e-5)
    low, high = float(split.train.ratings.min()), float(split.train.ratings.max())
    assert np.all((predicted >= low) & (predicted <= high))
    assert result.metrics["validation"]["val_rmse"] > 0 and (tmp_path / "run" / "metrics.json").is_file()


def test_interaction_loss_and_text_features_are_refused():
    # The rating recipe trains the rating head alone: its loss has no interaction term to set.
    with pytest.raises(ConfigError, match=r"--set loss.interaction_weight=1: unknown key 'loss.interaction_weight'"):
        load_config(None, TINY + ["loss.interaction_weight=1"])
    with pytest.raises(ConfigError, match=r"model.text_features=True is not supported by the rating recipe"):
        load_config(None, TINY + ["model.text_features=true"])


def test_bench_rating_reports_ours_beside_the_baseline_and_the_literature_and_blends_on_validation(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import bench_rating
    from test_rating_autoencoder import TINY as AUTOENCODER

    dataset, split = planted_dataset()
    configs = [(None, TINY + ["train.epochs=2"]), (None, AUTOENCODER + ["train.epochs=3", "model.pretrain_epochs=1"])]
    result = bench_rating.benchmark(dataset, split, configs, seeds=(3, 4), work_dir=str(tmp_path))
    result = json.loads(json.dumps(result))  # what --json writes
    baseline = BiasedBaseline().fit(split.train)
    assert result["baseline"] == rating_metrics(baseline.predict(split.test.user_ids, split.test.item_ids),
                                                split.test.ratings)
    din, autoencoder = result["models"]
    assert (din["name"], autoencoder["name"]) == ("DIN rating head", "GLocal-K kernel autoencoder")
    for k, model in enumerate(result["models"]):
        assert [r["seed"] for r in model["runs"]] == [3, 4]
        for run in model["runs"]:
            saved = json.loads((tmp_path / f"m{k}-seed{run['seed']}" / "metrics.json").read_text())
            assert run["RMSE"] == saved["test"]["RMSE"] and run["count"] == len(split.test)
        assert model["summary"]["RMSE"] == pytest.approx(np.mean([r["RMSE"] for r in model["runs"]]))
    # The blend's weights sum to 1 and are the grid's best on the hold-out: never worse there than
    # either model alone (each is a point of the grid).
    for blend, *alone in zip(result["blend"]["runs"], din["runs"], autoencoder["runs"]):
        assert sum(blend["weights"]) == pytest.approx(1.0) and min(blend["weights"]) >= 0
        assert blend["val_rmse"] <= min(r["val_rmse"] for r in alone) + 1e-4
    lines = bench_rating.table(result).splitlines()
    assert len(lines) == 2 + 3 * (2 + 1) + 1 + len(bench_rating.PUBLISHED)  # header, 3 x (seeds, mean), baseline, papers
    assert lines[4].startswith("| **ours: DIN rating head, mean ± sd** | 2 |")
    assert lines[10].startswith("| **ours: blend (weights chosen on validation), mean ± sd** | 2 |")
    assert "| GLocal-K (CIKM 2021), published | - | 0.8889 | 0.6950 | | |" in lines[12]


def test_blend_weights_find_the_mixture_on_the_grid():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import bench_rating

    rng = np.random.default_rng(0)
    actual = rng.normal(3, 1, 500)
    noise_a, noise_b = rng.normal(0, 0.5, 500), rng.normal(0, 0.5, 500)
    a, b = actual + noise_a, actual + noise_b  # independent errors: the best blend is near half and half
    weights = bench_rating.blend_weights([a, b], actual)
    assert 0.35 <= weights[0] <= 0.65
    np.testing.assert_allclose(bench_rating.blend_weights([a, actual], actual), [0.0, 1.0])
