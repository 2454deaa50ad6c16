"""Attention ranking (issue 18): target attention learns what matters, masks, rating head,
the ranking and recommend exports (fresh-process round trip) and bad requests over gRPC."""

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf

from tfrec_attn.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAIN = ["recipe=ranking", "model.embedding_dim=16", "model.attention_units=[16]", "model.mlp_units=[32]",
         "model.dropout=0.0", "model.item_features=false", "model.rating_embeddings=false",
         "model.time_embeddings=false", "model.user_features=false", "model.history_mean=false"]


def ranking_config(*overrides):
    return load_config(None, PLAIN + list(overrides))


def build(config, num_indices, **kwargs):
    from tfrec_attn.models.ranking import build_ranking_model

    tf.keras.utils.set_random_seed(config.seed)
    return build_ranking_model(config.model, config.loss, num_indices, **kwargs)


def inputs(history, candidates, ratings=None, gaps=None, users=None):
    history = np.asarray(history, np.int64)
    return {"history": tf.constant(history), "candidates": tf.constant(np.asarray(candidates, np.int64)),
            "history_ratings": tf.constant(np.zeros_like(history) if ratings is None else ratings, tf.int64),
            "history_gaps": tf.constant(np.zeros_like(history) if gaps is None else gaps, tf.int64),
            "user_features": tf.constant(np.zeros((len(history), 0)) if users is None else users, tf.int64)}


# -- target attention ---------------------------------------------------------------------------------
TRIGGER, RELEVANT = 7, (10, 11)


def trigger_rows(rng, n, length=8):
    """Histories of random items; the label is 1 exactly when the candidate is relevant and the
    history holds the trigger item."""
    others = np.array([i for i in range(2, 32) if i != TRIGGER and i not in RELEVANT])
    history = rng.choice(others, size=(n, length))
    has = rng.random(n) < 0.5
    where = rng.integers(0, length, n)
    history[has, where[has]] = TRIGGER
    relevant = rng.random(n) < 0.5
    candidate = np.where(relevant, rng.choice(RELEVANT, n), rng.choice(others, n))
    return history, candidate[:, None], (relevant & has).astype(np.float32), has, where


@pytest.mark.parametrize("overrides", [["model.attention=din"], ["model.attention=din", "model.normalization=softmax"],
                                       ["model.attention=bst", "model.num_heads=1"]],
                         ids=["din", "din_softmax", "bst"])
def test_target_attention_learns_a_trigger_item_and_weighs_it_most(overrides):
    config = ranking_config(*overrides, "loss.interaction=pointwise", "loss.rating_weight=0")
    model = build(config, 32)
    model.compile(tf.keras.optimizers.Adam(0.01))
    rng = np.random.default_rng(0)
    history, candidates, clicks, _, _ = trigger_rows(rng, 6000)
    data = tf.data.Dataset.from_tensor_slices((inputs(history, candidates), {
        "clicks": clicks[:, None], "rating": np.full(len(clicks), np.nan, np.float32)})).shuffle(6000, seed=0)
    model.fit(data.batch(64), epochs=8, verbose=0)

    history, candidates, clicks, has, where = trigger_rows(np.random.default_rng(1), 1000)
    out = model.predict_batch(inputs(history, candidates))
    predicted = out["scores"].numpy()[:, 0] > 0
    assert np.mean(predicted == (clicks > 0)) > 0.95
    # For relevant candidates, the trigger is the history item with the largest weight (in
    # magnitude: DIN's weights are not normalised, and a large negative weight counts as much).
    rows = has & np.isin(candidates[:, 0], RELEVANT)
    attention = np.abs(out["attention"].numpy()[rows, 0])
    assert np.mean(np.argmax(attention, axis=1) == where[rows]) > 0.9


@pytest.mark.parametrize("overrides", [["model.attention=din"], ["model.attention=din", "model.normalization=softmax"],
                                       ["model.attention=bst"]], ids=["din", "din_softmax", "bst"])
def test_padding_and_unknown_items_never_receive_attention(overrides):
    config = ranking_config(*overrides, "model.rating_embeddings=true", "model.time_embeddings=true",
                            "model.history_mean=true")
    model = build(config, 20)
    history = [[5, 6, 1, 7, 0, 0], [9, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    ratings = np.array([[3, 4, 5, 1, 0, 0], [2, 0, 0, 0, 0, 0], [0] * 6])
    out = model.predict_batch(inputs(history, [[3, 4, 1]] * 3, ratings=ratings, gaps=ratings))
    attention = out["attention"].numpy()
    real = np.array(history) >= 2
    assert np.all(attention[~np.broadcast_to(real[:, None, :], attention.shape)] == 0.0)
    assert np.all(np.abs(attention[0, :, [0, 1, 3]]) > 0)
    # What padding holds (and how much there is) does not change any output.
    noisy = ratings.copy()
    noisy[:, 4:] = 5
    wider = inputs([h + [0, 0] for h in history], [[3, 4, 1]] * 3, ratings=np.pad(noisy, ((0, 0), (0, 2))),
                   gaps=np.pad(noisy, ((0, 0), (0, 2))))
    again = model.predict_batch(wider)
    np.testing.assert_allclose(again["scores"].numpy(), out["scores"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again["attention"].numpy()[..., :6], attention, rtol=1e-5, atol=1e-6)


# -- rating head ----------------------------------------------------------------------------------------
def test_rating_head_beats_the_biased_baseline_on_biases_plus_an_interaction():
    from tfrec_attn.baselines import BiasedBaseline
    from tfrec_attn.data import Interactions
    from tfrec_attn.data.ranking_rows import history_arrays

    rng = np.random.default_rng(0)
    users, items, per_user = 300, 60, 30
    user_bias, item_bias = rng.normal(0, 0.4, users), rng.normal(0, 0.4, items)
    user_group, item_group = rng.integers(0, 2, users), rng.integers(0, 2, items)
    rated = np.stack([rng.choice(items, per_user, replace=False) for _ in range(users)])
    effect = np.where(user_group[:, None] == item_group[rated], 0.8, -0.8)
    ratings = np.clip(np.round(3.2 + user_bias[:, None] + item_bias[rated] + effect
                               + rng.normal(0, 0.3, rated.shape)), 1, 5).astype(np.float32)
    test_cols = 5  # each user's last 5 ratings are the test set

    def rows(cols):
        hist, vals, cand, target, who = [], [], [], [], []
        for u in range(users):
            train = [c for c in range(per_user - test_cols)]
            for c in cols:
                others = [t for t in train if t != c]
                hist.append(rated[u, others] + 2)
                vals.append(ratings[u, others])
                cand.append(rated[u, c] + 2)
                target.append(ratings[u, c])
                who.append(u)
        ids, rating_ids, _ = history_arrays(hist, [np.zeros(len(h), np.int64) for h in hist], vals, per_user, 5)
        return ids, rating_ids, np.array(cand)[:, None], np.array(target, np.float32), np.array(who)

    config = ranking_config("model.rating_embeddings=true", "model.history_mean=true", "loss.interaction_weight=0",
                            "loss.rating_weight=1", "model.embedding_dim=16")
    model = build(config, items + 2, rating_range=(1.0, 5.0, float(ratings.mean())))
    model.compile(tf.keras.optimizers.Adam(3e-3))
    ids, rating_ids, cand, target, _ = rows(range(per_user - test_cols))
    data = tf.data.Dataset.from_tensor_slices((inputs(ids, cand, ratings=rating_ids), {
        "clicks": np.ones((len(target), 1), np.float32), "rating": target})).shuffle(len(target), seed=0)
    model.fit(data.batch(128), epochs=12, verbose=0)

    ids, rating_ids, cand, target, who = rows(range(per_user - test_cols, per_user))
    predicted = model.predict_batch(inputs(ids, cand, ratings=rating_ids))["rating"].numpy()[:, 0]
    assert predicted.min() >= 1.0 and predicted.max() <= 5.0
    train_part = rated[:, :per_user - test_cols]
    baseline = BiasedBaseline().fit(Interactions.from_rows(
        np.repeat(np.arange(users), per_user - test_cols).astype(str), train_part.ravel().astype(str),
        np.zeros(train_part.size), ratings[:, :per_user - test_cols].ravel()))
    base = baseline.predict(who.astype(str), (cand[:, 0] - 2).astype(str))
    rmse = np.sqrt(np.mean((predicted - target) ** 2))
    base_rmse = np.sqrt(np.mean((base - target) ** 2))
    assert rmse < 0.9 * base_rmse, (rmse, base_rmse)


# -- exports ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_models(tiny_model, tiny_ranking):
    """The tiny retrieval model and a seeded ranking model over the same catalogue, with user
    features, ratings and times, and a non-zero blend weight (conftest's ``tiny_ranking``)."""
    retrieval, vocabulary = tiny_model
    return retrieval, vocabulary, tiny_ranking.model, tiny_ranking.encoder


@pytest.fixture(scope="module")
def exports(tiny_ranking, tiny_recommend):
    """Their ranking export and recommend export (max_len 6, k=5 of 12 candidates, 3 explanations)."""
    return tiny_ranking.base, tiny_ranking.ranking, tiny_recommend


HISTORIES = [["i3", "i7", "nope", "i1", "", ""], ["i12", "", "", "", "", ""]]


def reference_recommendations(two_models, histories, k=5, candidates=12, because=3):
    """What the recommend export must return, from the two in-memory models: ``because`` by
    a Python loop that re-scores each item with each history item removed."""
    from tfrec_attn.data.ranking_rows import history_arrays

    retrieval, vocabulary, model, _ = two_models

    def ranker(known, items):
        """The ranker's scores, ratings and attention of ``items`` (model indices) after ``known``."""
        recent = known[-6:]
        arrays = history_arrays([recent], [np.zeros(len(recent), np.int64)], [np.full(len(recent), np.nan)],
                                max(len(recent), 1), 5)
        out = model.predict_batch(inputs(arrays[0], [np.asarray(items)], ratings=arrays[1], gaps=arrays[2],
                                         users=np.zeros((1, 4))))
        return {name: value.numpy()[0] for name, value in out.items()}

    out = []
    for history in histories:
        real = [h for h in history if h]
        ids = vocabulary.model_indices(real)
        known = ids[ids >= 2]
        scores = retrieval.score_items(tf.constant([known if len(known) else [0]], tf.int64)).numpy()[0]
        scores[known - 2] = -np.inf
        top = np.argsort(-scores, kind="stable")[:candidates]
        ranked = ranker(known, top + 2)
        blended = ranked["scores"] + float(model.retrieval_weight.numpy()) * scores[top]
        order = np.argsort(-blended, kind="stable")[:k]
        attention = ranked["attention"][order]
        positions = [i for i, h in enumerate(history) if h and vocabulary.model_indices([h])[0] >= 2]
        shares = attention[:, :len(positions)] / np.abs(attention[:, :len(positions)]).sum(axis=1, keepdims=True)
        attention_ids = [[history[positions[j]] for j in np.argsort(-np.abs(row), kind="stable")[:because]]
                         for row in shares]
        because_ids, because_drops = [], []
        for item, score in zip(top[order] + 2, ranked["scores"][order]):
            drops = {j: score - ranker(np.delete(known, j), [item])["scores"][0] for j in range(len(known))}
            best = [j for j in sorted(drops, key=lambda j: -drops[j]) if drops[j] > 0][:because]
            because_ids.append([history[positions[j]] for j in best])
            because_drops.append([drops[j] for j in best])
        out.append({"item_ids": [str(vocabulary.item_ids[t]) for t in top[order]], "scores": blended[order],
                    "rating": ranked["rating"][order], "because_ids": because_ids, "because_drops": because_drops,
                    "attention_ids": attention_ids})
    return out


def test_recommend_export_reloaded_in_a_fresh_process_matches_the_two_models_in_memory(two_models, exports):
    code = f"""
import json, numpy as np, tensorflow as tf
m = tf.saved_model.load({exports[2]!r})
out = m.signatures["serving_default"](history=tf.constant({HISTORIES!r}))
print(json.dumps({{k: v.numpy().tolist() if v.dtype != tf.string else np.char.decode(v.numpy().astype(bytes)).tolist()
                  for k, v in out.items()}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "tfrec_attn" not in proc.stderr
    expected = reference_recommendations(two_models, HISTORIES)
    for row, want in enumerate(expected):
        assert got["item_ids"][row] == want["item_ids"]
        np.testing.assert_allclose(got["scores"][row], want["scores"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["rating"][row], want["rating"], rtol=1e-4, atol=1e-5)
        # Explanations: real history items only ("nope" is unknown, "" is padding): `because` by
        # the score drop without the item (leave one out, as the Python loop), the attention apart.
        for ids, drops, want_ids, want_drops in zip(got["because_ids"][row], got["because_drops"][row],
                                                    want["because_ids"], want["because_drops"]):
            assert ids[:len(want_ids)] == want_ids and not any(ids[len(want_ids):]), (ids, want_ids)
            np.testing.assert_allclose(drops[:len(want_drops)], want_drops, rtol=1e-4, atol=1e-5)
            assert all(d > 0 for d in drops[:len(want_drops)]) and not any(drops[len(want_drops):])
        assert [ids[:len(w)] for ids, w in zip(got["attention_ids"][row], want["attention_ids"])] == \
            want["attention_ids"]
        assert all(i in {"i3", "i7", "i1", "i12", ""} for ids in got["because_ids"][row] for i in ids)
    # The second history has one real item: one attention entry, then padding with weight 0.
    assert all(ids == ["i12", "", ""] for ids in got["attention_ids"][1])
    assert all(w[1:] == [0.0, 0.0] for w in got["attention_weights"][1])
    assert sum(bool(ids[0]) for rows in got["because_ids"] for ids in rows) >= 3  # drops do occur


def test_ranking_export_explains_only_real_history_items(exports):
    loaded = tf.saved_model.load(exports[1])
    history = tf.constant([["i3", "", "nope", "i7"]])
    out = loaded.signatures["explain"](history=history, candidates=tf.constant([["i1", "i2", "unknown"]]))
    attention = out["attention"].numpy()[0]
    assert attention.shape == (3, 4)
    assert np.all(attention[:, [1, 2]] == 0) and np.all(attention[:, [0, 3]] != 0)
    scored = loaded.signatures["serving_default"](history=history, candidates=tf.constant([["i1", "i2", "unknown"]]))
    assert np.all(np.isfinite(scored["scores"].numpy())) and scored["rating"].numpy().min() >= 1.0


@pytest.fixture(scope="module")
def ranking_server(exports):
    from tfrec_attn.serving.config import parse_model_server_config
    from tfrec_attn.serving.server import ModelServer

    base = exports[0]
    config = parse_model_server_config(
        "model_config_list { "
        + " ".join(f'config {{ name: "{name}" base_path: "{os.path.join(base, name)}" model_platform: "tensorflow" }}'
                   for name in ("ranking", "recommend")) + " }")
    server = ModelServer(config, port=0, host="127.0.0.1", poll_wait_seconds=0).start()
    yield server
    server.stop()


def features(rows=1, age=30):
    return {"history_ratings": np.full((rows, 2), 4.0, np.float32),
            "history_timestamps": np.full((rows, 2), 880000000, np.int64),
            "user_age": np.full(rows, age, np.int64), "user_gender": np.array(["F"] * rows, object),
            "user_occupation": np.array(["writer"] * rows, object), "user_zip": np.array(["10001"] * rows, object)}


BAD_REQUESTS = [
    ("ranking", "serving_default", {"history": [["i1", "i2"]], "candidates": np.array([[3, 4]], np.int64)},
     "candidates"),
    ("ranking", "serving_default", {"history": [["i1", "i2"]], "candidates": ["i3", "i4"]}, "candidates"),
    ("ranking", "serving_default", {"history": [["i1", "i2"]], "candidates": np.zeros((1, 0), object)},
     "candidates"),
    ("ranking", "with_features", {"history": [["i1", "i2"]], "candidates": [["i3"]],
                                  **features(), "user_age": np.array(["30"], object)}, "user_age"),
    ("ranking", "with_features", {"history": [["i1", "i2"]], "candidates": [["i3"]],
                                  **features(), "history_ratings": np.full((1, 3), 4.0, np.float32)},
     "history_ratings"),
    ("recommend", "with_features", {"history": [["i1", "i2"]], **features(), "user_gender": np.array([1], np.int64)},
     "user_gender"),
    ("recommend", "serving_default", {"history": [["i1", "i2"]], "candidates": [["i3"]]}, "candidates"),
    # within the server's limits, but the graph would hold [64, 300, 1024] attention weights and more
    ("ranking", "serving_default", {"history": np.full((64, 1024), "i1", object),
                                    "candidates": np.full((64, 300), "i2", object)}, "rows x candidates"),
]


@pytest.mark.parametrize("name,signature,request_inputs,field", BAD_REQUESTS,
                         ids=["dtype", "rank", "empty", "user_age_type", "ratings_shape", "gender_type", "extra",
                              "too_large"])
def test_bad_requests_get_invalid_argument_naming_the_input_and_the_server_keeps_serving(
        ranking_server, name, signature, request_inputs, field):
    from tfrec_attn.serving.client import RecommenderClient, ServingError

    with RecommenderClient(f"127.0.0.1:{ranking_server.port}", model_name=name) as client:
        inputs_ = {k: np.array(v, dtype=object) if isinstance(v, list) else v for k, v in request_inputs.items()}
        with pytest.raises(ServingError) as caught:
            client.predict(inputs_, signature)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in str(caught.value)
        # Unknown ids are OOV, never an error; the server still answers.
        out = client.predict({"history": np.array([["i1", "zzz"]], object),
                              "candidates": np.array([["i2", "not-an-item"]], object)}, "serving_default") \
            if name == "ranking" else client.predict({"history": np.array([["i1", "zzz"]], object)})
        assert all(np.all(np.isfinite(v)) for v in out.values() if v.dtype != object)


def test_empty_histories_and_batches_are_answered_not_refused(ranking_server):
    from tfrec_attn.serving.client import RecommenderClient

    with RecommenderClient(f"127.0.0.1:{ranking_server.port}", model_name="recommend") as client:
        empty = client.predict({"history": np.zeros((2, 0), object)})  # no history: popular-ish items, no because
        padded = client.predict({"history": np.array([[""], [""]], object)})
        for name in ("item_ids", "because_ids"):
            np.testing.assert_array_equal(empty[name], padded[name])
        assert empty["item_ids"].shape == (2, 5) and not empty["because_ids"].astype(bool).any()
    with RecommenderClient(f"127.0.0.1:{ranking_server.port}", model_name="ranking") as client:
        out = client.predict({"history": np.zeros((0, 2), object), "candidates": np.zeros((0, 0), object)})
        assert out["scores"].shape == (0, 0)


def test_client_recommend_returns_explanations(ranking_server):
    from tfrec_attn.serving.client import RecommenderClient

    with RecommenderClient(f"127.0.0.1:{ranking_server.port}", model_name="recommend") as client:
        results = client.recommend(["i3", "i7", "i1"])
    assert len(results) == 5
    item, score = results[0]  # still (item_id, score) pairs
    assert results[0].rating >= 1.0 and results[0].because
    assert {b for b, _ in results[0].because} <= {"i3", "i7", "i1"}
    # With what else is known (ratings, times, the user's profile): the with_features signature.
    with RecommenderClient(f"127.0.0.1:{ranking_server.port}", model_name="recommend") as client:
        informed = client.recommend(["i3", "i7", "i1"], ratings=[5, 1, 4], timestamps=[880000000, 880100000, 0],
                                    user={"age": 30, "gender": "F", "occupation": "writer", "zip": "10001"})
        with pytest.raises(ValueError, match="2 ratings/timestamps for 3 history items"):
            client.recommend(["i3", "i7", "i1"], ratings=[5, 1])
    assert len(informed) == 5 and all(1.0 <= r.rating <= 5.0 for r in informed)
    assert [r.score for r in informed] != [r.score for r in results]  # the features change the scores


# -- the command line -------------------------------------------------------------------------------------
def test_tfrec_attn_train_on_a_ranking_config_trains_reports_and_exports_both_models(tmp_path):
    from test_cli import CLI, CONFIG, planted_csv

    inter = planted_csv(tmp_path, num_users=80, seed=3)
    small = ["model.embedding_dim=16", "model.max_len=20", "train.batch_size=32", "train.epochs=1",
             "train.refit_with_validation=false"]
    retrieval = tmp_path / "retrieval"
    cmd = CLI + ["train", CONFIG, "--interactions", str(inter), "--output-dir", str(retrieval), "--keras-verbose", "0",
                 "--no-export", "--set", "model.num_blocks=1"]
    proc = subprocess.run(sum((["--set", s] for s in small), cmd), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranking = tmp_path / "ranking"
    config = os.path.join(ROOT, "training", "configs", "ml100k_ranking.yaml")
    cmd = CLI + ["train", config, "--interactions", str(inter), "--output-dir", str(ranking), "--keras-verbose", "0",
                 "--set", f"retrieval.run_dir={retrieval}", "--set", "retrieval.candidates=20", "--set", "export.k=5"]
    proc = subprocess.run(sum((["--set", s] for s in small), cmd), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("  ")[0] for line in proc.stdout.splitlines()}
    assert {"retrieval only", "two-stage"} <= rows, proc.stdout
    assert "RMSE" not in proc.stdout  # the CSV has no ratings: no rating metrics, no error
    assert f"exported {ranking}/export/ranking/1" in proc.stdout
    assert f"exported {ranking}/export/recommend/1" in proc.stdout
    # `tfrec-attn export` on the ranking run: the next versions of both, which a fresh process
    # exported from the run directory alone and which answer exactly as the versions `train`
    # exported from memory (the other recipes: tests/test_run_dir.py).
    proc = subprocess.run(CLI + ["export", str(ranking)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [f"{ranking}/export/ranking/2", f"{ranking}/export/recommend/2"]
    from test_run_dir import assert_same_outputs

    for model in ("ranking", "recommend"):
        assert_same_outputs(str(ranking / "export" / model / "1"), str(ranking / "export" / model / "2"), model)
    # A retrieval run that is not there: one line naming the setting.
    proc = subprocess.run(CLI + ["train", config, "--interactions", str(inter), "--output-dir", str(tmp_path / "x"),
                                 "--set", "retrieval.run_dir=/no/such/run"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: retrieval.run_dir='/no/such/run': not a finished retrieval run")


def test_ranker_item_embeddings_start_from_the_retrieval_model(tiny_model):
    from tfrec_attn.evaluation.retrieval import Retriever
    from tfrec_attn.features.vocab import ItemVocabulary
    from tfrec_attn.models.initialization import retrieval_item_init

    retrieval, vocabulary = tiny_model
    source = np.asarray(retrieval.item_embeddings())
    centred = source - source.mean(axis=0)
    # The ranker's vocabulary in another order, with one item the retrieval model does not know.
    ranker_vocab = ItemVocabulary(["zzz"] + list(vocabulary.item_ids[::-1]))
    rows = ranker_vocab.model_indices(vocabulary.item_ids)
    for width in (source.shape[1], 4):
        table = np.random.default_rng(0).normal(0, 0.02, (ranker_vocab.num_indices, width)).astype(np.float32)
        out = retrieval_item_init(Retriever(retrieval, vocabulary), ranker_vocab, table)
        np.testing.assert_array_equal(out[:3], table[:3])  # padding, OOV and the unknown item keep their init
        assert abs(out[rows].std() - table.std()) < 1e-3
        gram = out[rows] @ out[rows].T
        want = centred @ centred.T
        # Same width: the same geometry, rescaled; 4 of 16 dims: its main directions.
        corr = np.corrcoef(gram.ravel(), want.ravel())[0, 1]
        assert corr > (0.999 if width == source.shape[1] else 0.5), (width, corr)


def test_din_first_layer_equals_the_dense_layer_on_the_concatenated_pair_features():
    from tfrec_attn.layers.target_attention import DinAttention

    tf.keras.utils.set_random_seed(0)
    layer = DinAttention([16, 8])
    history, candidates = tf.random.normal([2, 5, 12]), tf.random.normal([2, 3, 12])
    mask = tf.constant([[True] * 5, [True, True, False, False, False]])
    _, weights = layer(history, mask, candidates)
    h = tf.broadcast_to(history[:, None], [2, 3, 5, 12])
    c = tf.broadcast_to(candidates[:, :, None], [2, 3, 5, 12])
    x = tf.concat([h, c, h - c, h * c], axis=-1)  # DIN's activation unit input, as in the paper
    for dense in layer.hidden:
        x = dense(x)
    reference = tf.squeeze(layer.score(x), -1) * tf.cast(mask, tf.float32)[:, None]
    np.testing.assert_allclose(weights.numpy(), reference.numpy(), atol=1e-5)
    assert layer.hidden[0].kernel.shape == (48, 16) and "hidden_0" in layer.hidden[0].kernel.name


def test_leave_one_out_drops_are_the_score_without_each_of_the_top_attention_items(tiny_ranking, tiny_model):
    """The ranking graph's leave-one-out: for each candidate, its M history items of largest
    |attention| are removed one at a time and the candidate scored again; the drops equal the
    served scores of the shortened histories, and items outside the top M get none."""
    from tfrec_attn.export.ranking import RankingServingModule

    _, vocabulary = tiny_model
    module = RankingServingModule(tiny_ranking.model, vocabulary, tiny_ranking.encoder, max_len=6, num_ratings=5,
                                  explain_positions=2)
    history = ["i3", "", "i7", "nope", "i1", "i9"]
    candidates = tf.constant([["i2", "i5", "i11"]])
    drops = module.leave_one_out_drops(tf.constant([history]), candidates)["drops"].numpy()[0]
    scores, _, attention = module.rank(tf.constant([history]), candidates)
    attention = attention.numpy()[0]
    real = [0, 2, 4, 5]
    for c in range(3):
        top = sorted(real, key=lambda p: -abs(attention[c, p]))[:2]
        assert set(np.flatnonzero(drops[c])) <= set(top) and np.count_nonzero(drops[c]) >= 1
        for p in top:
            without = [h if i != p else "" for i, h in enumerate(history)]
            again = module.rank(tf.constant([without]), candidates[:, c:c + 1])[0].numpy()[0, 0]
            assert drops[c, p] == pytest.approx(float(scores[0, c]) - again, rel=1e-4, abs=1e-5)
        assert not drops[c, [1, 3]].any()  # padding and an unknown id are never removed


def test_leave_one_out_past_max_len_with_times_and_ratings_equals_re_ranking_each_shortened_history(
        tiny_ranking, tiny_model):
    """The leave-one-out re-scores from the compact ids: with more known items than max_len
    (6), removing one lets the next older item in, and the removed item's time and rating go
    with it (removing the newest event moves every time gap). Each drop equals re-ranking
    the history with that position blanked, through the string path."""
    from tfrec_attn.export.ranking import RankingServingModule

    _, vocabulary = tiny_model
    module = RankingServingModule(tiny_ranking.model, vocabulary, tiny_ranking.encoder, max_len=6, num_ratings=5,
                                  explain_positions=6)
    history = ["i3", "i8", "", "i7", "nope", "i1", "i9", "i4", "i10", "i6", "i2"]
    times = [880000000 + 86400 * 3 ** i if h else 0 for i, h in enumerate(history)]
    ratings = [float(1 + i % 5) if h else np.nan for i, h in enumerate(history)]
    user = (tf.constant([30], tf.int64), tf.constant(["F"]), tf.constant(["writer"]), tf.constant(["9"]))
    candidates = tf.constant([["i5", "i11", "i12"]])

    def rank(h, r, t, c):
        return module.rank(tf.constant([h]), c, tf.constant([r], tf.float32), tf.constant([t], tf.int64), user)

    scores, _, attention = rank(history, ratings, times, candidates)
    positions, drops, real = module.leave_one_out(tf.constant([history]), candidates, attention, scores, 6,
                                                  tf.constant([ratings], tf.float32), tf.constant([times], tf.int64),
                                                  user)
    read = [5, 6, 7, 8, 9, 10]  # the newest six known items
    checked = 0
    for c in range(3):
        assert sorted(np.asarray(positions[0, c])[np.asarray(real[0, c])].tolist()) == read
        for p, drop in zip(positions.numpy()[0, c], drops.numpy()[0, c]):
            blank = [(h, r, t) if i != p else ("", np.nan, 0) for i, (h, r, t) in enumerate(zip(history, ratings,
                                                                                                times))]
            again = rank(*map(list, zip(*blank)), candidates[:, c:c + 1])[0].numpy()[0, 0]
            assert drop == pytest.approx(float(scores[0, c]) - again, rel=1e-4, abs=1e-5), (c, p)
            checked += abs(drop) > 1e-4
    assert checked >= 6  # the drops are not all zero


def test_the_biased_rating_head_starts_at_the_biased_baseline_read_from_the_history():
    """With its correction at 0 (its initial value), the head predicts mean + item bias +
    the history's shrunk residual: the biased baseline's estimate, computed in the graph."""
    from tfrec_attn.layers.rating_head import BiasedRatingHead

    head = BiasedRatingHead(12, 1.0, 5.0, 3.5, shrinkage=2.0)
    history = np.array([[2, 3, 4, 0], [5, 0, 0, 0], [6, 7, 0, 0]], np.int64)
    ratings = np.array([[5, 4, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], np.int64)  # row 3: no rating known
    candidates = np.array([[8, 9], [8, 10], [9, 10]], np.int64)
    head(tf.zeros((3, 2, 4)), history, ratings, candidates)  # builds
    bias = np.linspace(-0.5, 0.5, 12).astype(np.float32)
    head.item_bias.embeddings.assign(bias[:, None])
    out = head(tf.random.normal((3, 2, 4)), history, ratings, candidates).numpy()
    user = [((5 - 3.5 - bias[2]) + (4 - 3.5 - bias[3])) / (2 + 2.0), (1 - 3.5 - bias[5]) / (1 + 2.0), 0.0]
    want = np.clip(3.5 + bias[candidates] + np.array(user)[:, None], 1.0, 5.0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    assert load_config(None, ["recipe=ranking", "model.rating_biases=true"]).model.rating_biases
    with pytest.raises(ConfigError, match="model.rating_biases=True needs model.rating_embeddings=true"):
        load_config(None, ["recipe=ranking", "model.rating_biases=true", "model.rating_embeddings=false"])
