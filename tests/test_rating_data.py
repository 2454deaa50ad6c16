"""User features, the GroupLens u1..u5 rating folds, the biased baseline and RMSE/MAE."""

import os

import numpy as np
import pytest

from tfrec_attn.baselines import BiasedBaseline
from tfrec_attn.data import (
    DataFormatError,
    Dataset,
    Interactions,
    User,
    grouplens_fold,
    leave_one_out,
    leave_one_out_rating_split,
    random_rating_split,
    read_movielens,
)
from tfrec_attn.data.movielens import ML1M_OCCUPATIONS, read_ml1m
from tfrec_attn.evaluation.rating import rating_metrics

U_ITEM = "10|Film (1990)|01-Jan-1990||url|" + "|".join(["0"] * 19) + "\n"


def write(path, text, encoding="utf-8"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
    return str(path)


def make_ml100k(tmp_path, users=None):
    write(tmp_path / "u.data", "1\t10\t4\t100\n2\t10\t5\t101\n")
    write(tmp_path / "u.item", U_ITEM, "latin-1")
    if users is not None:
        write(tmp_path / "u.user", users)
    return str(tmp_path)


# --- user features -------------------------------------------------------------------------


def test_u_user_is_read_into_users(tmp_path):
    dataset = read_movielens(make_ml100k(tmp_path, "1|24|M|technician|85711\n2|53|F|other|T8H1N\n"))
    assert dataset.users == {
        "1": User("1", 24, "M", "technician", "85711"),
        "2": User("2", 53, "F", "other", "T8H1N"),  # zip codes stay strings (Canadian ones exist)
    }
    assert dataset.user("2").occupation == "other"
    assert dataset.user("999") == User("999")  # absent: every feature unknown
    assert dataset.user("999").age is None and dataset.user("999").gender == ""
    assert dataset.subset_users(["2"]).users == {"2": dataset.users["2"]}


def test_without_u_user_users_are_empty(tmp_path):
    dataset = read_movielens(make_ml100k(tmp_path))
    assert dataset.users == {}
    assert dataset.user("1") == User("1")


@pytest.mark.parametrize(
    "line, field, problem",
    [
        ("3|2x|M|writer|32067\n", "age", "not an integer (got '2x')"),
        ("3|-4|M|writer|32067\n", "age", "negative age"),
        ("3|23|M|writer\n", "zip_code", "expected 5 fields"),
        ("3|23|M|writer|32067|extra\n", "<line>", "expected 5 fields"),
        ("|23|M|writer|32067\n", "user_id", "empty id"),
        ("1|23|M|writer|32067\n", "user_id", "duplicate user id (got '1')"),
    ],
)
def test_bad_u_user_line_names_file_line_field(tmp_path, line, field, problem):
    directory = make_ml100k(tmp_path, "1|24|M|technician|85711\n2|53|F|other|94043\n" + line)
    path = os.path.join(directory, "u.user")
    with pytest.raises(DataFormatError) as info:
        read_movielens(directory)
    assert (info.value.path, info.value.line, info.value.field) == (path, 3, field)
    assert str(info.value).startswith(f"{path}:3: field '{field}': {problem}")


def test_skip_policy_counts_bad_u_user_lines(tmp_path):
    directory = make_ml100k(tmp_path, "1|24|M|technician|85711\n2|old|F|other|94043\n3|23|M|writer\n"
                                     "4|33|F|artist|12345\n")
    dataset = read_movielens(directory, on_bad_line="skip")
    assert sorted(dataset.users) == ["1", "4"]
    assert dataset.skipped.count == 2
    assert "u.user:2: field 'age': not an integer" in dataset.skipped.examples[0]
    assert "u.user:3: field 'zip_code': expected 5 fields" in dataset.skipped.examples[1]


def test_users_dat_maps_ml1m_codes(tmp_path):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n2::1193::3::978300761\n")
    write(tmp_path / "movies.dat", "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n", "latin-1")
    write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::0::55117\n"
                                  "4::M::45::20::02460\n")
    users = read_ml1m(str(tmp_path)).users
    assert users["1"] == User("1", 1, "F", "K-12 student", "48067")  # age code 1 = "Under 18"
    assert users["2"] == User("2", 56, "M", "self-employed", "70072")
    assert users["3"].occupation == "other" and users["4"].occupation == "writer"
    assert users["4"].zip_code == "02460"  # leading zero kept
    assert len(ML1M_OCCUPATIONS) == 21


@pytest.mark.parametrize(
    "line, field, problem",
    [
        ("9::M::25::21::55117\n", "occupation", "not an ML-1M occupation code (expected 0 to 20)"),
        ("9::M::25::x::55117\n", "occupation", "not an integer"),
        ("9::M::30::1::55117\n", "age", "not an ML-1M age-group code"),
        ("9::M::25::1\n", "zip_code", "expected 5 fields"),
    ],
)
def test_bad_users_dat_line_names_file_line_field(tmp_path, line, field, problem):
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n")
    write(tmp_path / "movies.dat", "1193::Film (1975)::Drama\n")
    path = write(tmp_path / "users.dat", "1::F::1::10::48067\n" + line)
    with pytest.raises(DataFormatError, match=rf"^{path}:2: field '{field}': ") as info:
        read_ml1m(str(tmp_path))
    assert problem in str(info.value)
    skipped = read_ml1m(str(tmp_path), on_bad_line="skip")
    assert list(skipped.users) == ["1"] and skipped.skipped.count == 1


def test_dataset_positional_constructor_still_works():
    interactions = Interactions.from_rows(["u"], ["i"], [1], [4.0])
    dataset = Dataset("toy", interactions, {}, "somewhere")
    assert dataset.users == {} and dataset.skipped.count == 0


# --- rating splits -------------------------------------------------------------------------


def numbered_interactions(n):
    """Row ``k`` has user ``u{k % 97}``, item ``i{k}`` and timestamp ``k``: rows are traceable."""
    rows = np.arange(n)
    return Interactions.from_rows([f"u{k % 97}" for k in rows], [f"i{k}" for k in rows], rows,
                                  1.0 + rows % 5)


@pytest.mark.parametrize("fold", [1, 3, 5])
def test_grouplens_fold_takes_the_mku_sh_lines(fold):
    split = grouplens_fold(numbered_interactions(100_000), fold)
    start = (fold - 1) * 20_000
    assert split.name == f"u{fold}"
    np.testing.assert_array_equal(split.test.timestamps, np.arange(start, start + 20_000))
    np.testing.assert_array_equal(
        split.train.timestamps, np.concatenate([np.arange(start), np.arange(start + 20_000, 100_000)]))
    assert split.test.item_ids[0] == f"i{start}" and split.test.ratings[0] == 1.0 + start % 5


def test_grouplens_fold_rejects_other_data_and_folds():
    with pytest.raises(ValueError, match=r"defined on ML-100K's u\.data .* got 99,999 interactions"):
        grouplens_fold(numbered_interactions(99_999))
    for fold in (0, 6, 1.0, True):
        with pytest.raises(ValueError, match=r"fold must be an integer from 1 to 5"):
            grouplens_fold(numbered_interactions(100_000), fold)


def test_u1_is_the_first_20000_lines_of_u_data(ml100k_dir):
    with open(os.path.join(ml100k_dir, "u.data")) as handle:
        lines = [line.split("\t") for line in handle.read().splitlines()]
    split = grouplens_fold(read_movielens(ml100k_dir).interactions, 1)

    def rows(part):
        return list(zip(part.user_ids.tolist(), part.item_ids.tolist(), part.ratings.tolist()))

    assert rows(split.test) == [(u, i, float(r)) for u, i, r, _ in lines[:20_000]]
    assert rows(split.train) == [(u, i, float(r)) for u, i, r, _ in lines[20_000:]]


def test_random_rating_split_is_a_seeded_partition():
    interactions = numbered_interactions(1_000)
    split = random_rating_split(interactions, test_fraction=0.25, seed=3)
    assert (len(split.train), len(split.test)) == (750, 250)
    both = np.concatenate([split.train.timestamps, split.test.timestamps])
    np.testing.assert_array_equal(np.sort(both), np.arange(1_000))
    assert np.all(np.diff(split.test.timestamps) > 0)  # file order kept
    again = random_rating_split(interactions, test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(again.test.timestamps, split.test.timestamps)
    other = random_rating_split(interactions, test_fraction=0.25, seed=4)
    assert not np.array_equal(other.test.timestamps, split.test.timestamps)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        random_rating_split(interactions, test_fraction=1.0)


# --- biased baseline and metrics -----------------------------------------------------------


def test_leave_one_out_rating_split_is_the_main_jobs_rating_table():
    # u1: 4 events (evaluated); u2: 2 events (too few: trains only); u3: 3 events, one unrated
    rows = [("u1", "a", 1, 5), ("u1", "b", 2, 4), ("u1", "c", 3, 3), ("u1", "d", 4, 2),
            ("u2", "a", 5, 1), ("u2", "c", 6, 2), ("u3", "b", 7, 3), ("u3", "d", 8, np.nan), ("u3", "a", 9, 4)]
    split = leave_one_out(Interactions.from_rows(*zip(*rows)), min_interactions=3)
    ratings = leave_one_out_rating_split(split)
    assert ratings.name == "leave-one-out"
    test = list(zip(ratings.test.user_ids, ratings.test.item_ids, ratings.test.ratings.tolist()))
    assert test == [("u1", "d", 2.0), ("u3", "a", 4.0)]  # the newest event of each evaluated user
    train = sorted(zip(ratings.train.user_ids, ratings.train.item_ids, ratings.train.timestamps.tolist()))
    assert train == [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "a", 5), ("u2", "c", 6),
                     ("u3", "b", 7), ("u3", "d", 8)]  # everything before, the validation targets included
    assert np.isnan(ratings.train.ratings[list(ratings.train.item_ids).index("d")])  # kept, unrated


def planted_ratings(seed=0, num_users=300, num_items=200, num_ratings=30_000, noise=0.3):
    """Ratings = 3.5 + user bias + item bias + noise, clipped to 1..5."""
    rng = np.random.default_rng(seed)
    user_bias = rng.normal(0, 0.5, num_users)
    item_bias = rng.normal(0, 0.7, num_items)
    users = rng.integers(0, num_users, num_ratings)
    items = rng.integers(0, num_items, num_ratings)
    ratings = np.clip(3.5 + user_bias[users] + item_bias[items] + rng.normal(0, noise, num_ratings), 1, 5)
    interactions = Interactions.from_rows([f"u{u}" for u in users], [f"i{i}" for i in items],
                                          np.arange(num_ratings), ratings)
    return interactions, user_bias, item_bias


def surprise_baseline_als(interactions, reg_user=15.0, reg_item=10.0, epochs=10):
    """Surprise's ``BaselineOnly.baseline_als``, loop for loop: the reference."""
    mean = float(np.mean(interactions.ratings.astype(np.float64)))
    by_item, by_user = {}, {}
    for u, i, r in zip(interactions.user_ids, interactions.item_ids, interactions.ratings):
        by_item.setdefault(i, []).append((u, float(r)))
        by_user.setdefault(u, []).append((i, float(r)))
    bu = dict.fromkeys(by_user, 0.0)
    bi = dict.fromkeys(by_item, 0.0)
    for _ in range(epochs):
        for i, rated in by_item.items():
            bi[i] = sum(r - mean - bu[u] for u, r in rated) / (reg_item + len(rated))
        for u, rated in by_user.items():
            bu[u] = sum(r - mean - bi[i] for i, r in rated) / (reg_user + len(rated))
    return mean, bu, bi


def test_biased_baseline_equals_surprise_als():
    interactions, _, _ = planted_ratings(seed=1, num_users=40, num_items=30, num_ratings=600)
    model = BiasedBaseline().fit(interactions)
    mean, bu, bi = surprise_baseline_als(interactions)
    assert model.global_mean == pytest.approx(mean)
    np.testing.assert_allclose(model.user_bias, [bu[u] for u in model.user_ids], atol=1e-12)
    np.testing.assert_allclose(model.item_bias, [bi[i] for i in model.item_ids], atol=1e-12)


def test_biased_baseline_recovers_planted_biases_and_beats_the_mean():
    interactions, user_bias, item_bias = planted_ratings()
    split = random_rating_split(interactions, 0.2, seed=0)
    model = BiasedBaseline().fit(split.train)
    users = np.array([int(u[1:]) for u in model.user_ids])
    items = np.array([int(i[1:]) for i in model.item_ids])
    assert np.corrcoef(model.user_bias, user_bias[users])[0, 1] > 0.9
    assert np.corrcoef(model.item_bias, item_bias[items])[0, 1] > 0.9

    predicted = model.predict(split.test.user_ids, split.test.item_ids)
    assert predicted.dtype == np.float32 and predicted.shape == (len(split.test),)
    ours = rating_metrics(predicted, split.test.ratings)
    mean = rating_metrics(np.full(len(split.test), split.train.ratings.mean()), split.test.ratings)
    assert ours["count"] == mean["count"] == len(split.test)
    assert ours["RMSE"] < 0.6 * mean["RMSE"] and ours["MAE"] < mean["MAE"]


def test_biased_baseline_clips_and_handles_unknown_ids():
    # u0 loves everything, i0 is loved by everyone: mean + biases overshoots 5.
    interactions = Interactions.from_rows(
        ["u0"] * 4 + ["u1", "u2", "u3", "u1", "u2", "u3"], ["i0", "i1", "i2", "i3"] + ["i0"] * 3 + ["i1"] * 3,
        np.arange(10), [5, 5, 5, 5, 5, 5, 5, 2, 1, 2])
    model = BiasedBaseline(reg_user=0.1, reg_item=0.1).fit(interactions)
    assert model.rating_range == (1.0, 5.0)
    predicted = model.predict(["u0", "u1", "new", "u1", "new"], ["i0", "i1", "i1", "new", "new"])
    user = dict(zip(model.user_ids, model.user_bias))
    item = dict(zip(model.item_ids, model.item_bias))
    assert model.global_mean + user["u0"] + item["i0"] > 5.0 and predicted[0] == 5.0  # clipped
    assert np.all((predicted >= 1.0) & (predicted <= 5.0))
    assert predicted[2] == pytest.approx(model.global_mean + item["i1"])  # unknown user: b_u = 0
    assert predicted[3] == pytest.approx(model.global_mean + user["u1"])  # unknown item: b_i = 0
    assert predicted[4] == pytest.approx(model.global_mean)


def test_biased_baseline_errors():
    unrated = Interactions.from_rows(["u"], ["i"], [1], [float("nan")])
    with pytest.raises(ValueError, match="none of the 1 training interactions has a finite rating"):
        BiasedBaseline().fit(unrated)
    with pytest.raises(RuntimeError, match="before fit"):
        BiasedBaseline().predict(["u"], ["i"])
    model = BiasedBaseline().fit(Interactions.from_rows(["u", "v"], ["i", "i"], [1, 2], [4.0, float("nan")]))
    assert model.global_mean == 4.0 and list(model.user_ids) == ["u"]  # NaN rows are ignored
    with pytest.raises(ValueError, match="equal length"):
        model.predict(["u", "u"], ["i"])


def test_rating_metrics_by_hand():
    result = rating_metrics([3.0, 4.5, 1.0, 2.0], [4.0, 4.0, float("nan"), 2.0])
    assert result == {"RMSE": pytest.approx(np.sqrt((1 + 0.25 + 0) / 3)), "MAE": pytest.approx(0.5),
                      "count": 3}
    with pytest.raises(ValueError, match="equal length"):
        rating_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="all 1 actual ratings are NaN"):
        rating_metrics([1.0], [float("nan")])
    with pytest.raises(ValueError, match="first at row 1"):
        rating_metrics([1.0, float("nan"), 3.0], [1.0, 2.0, float("nan")])
