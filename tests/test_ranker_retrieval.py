"""A ranker that knows what retrieval knows (issue 25): the frozen retrieval model's score of
each candidate as a ranker input — it pays when retrieval is informative, training rows get
the very queries serving computes, the exports compute them in the graph (so a leave-one-out
re-scoring recomputes them), and the settings fail in one line when misused."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfrec_attn.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLAIN = ["recipe=ranking", "model.embedding_dim=16", "model.attention_units=[16]", "model.mlp_units=[32]",
         "model.dropout=0.0", "model.item_features=false", "model.rating_embeddings=false",
         "model.time_embeddings=false", "model.user_features=false", "model.history_mean=false",
         "loss.rating_weight=0"]
NUM_INDICES, DIM, CANDIDATES = 42, 8, 5


def build(overrides=(), retrieval_items=None, interests=1):
    from tfrec_attn.models.ranking import build_ranking_model

    config = load_config(None, PLAIN + list(overrides))
    tf.keras.utils.set_random_seed(0)
    return build_ranking_model(config.model, config.loss, NUM_INDICES, retrieval_items=retrieval_items,
                               retrieval_interests=interests)


def informative_rows(rng, n, table, noise=0.6):
    """Histories of random items (they say nothing); the candidates are 5 distinct items, the
    positive at a random place, and the retrieval query points at the positive (its vector +
    noise): only a ranker that reads retrieval can find it."""
    candidates = np.stack([rng.choice(np.arange(2, NUM_INDICES), CANDIDATES, replace=False) for _ in range(n)])
    where = rng.integers(0, CANDIDATES, n)
    positive = candidates[np.arange(n), where]
    query = table[positive] + rng.normal(0, noise, (n, DIM)).astype(np.float32)
    history = rng.integers(2, NUM_INDICES, (n, 6))
    inputs = {"history": history, "candidates": candidates, "history_ratings": np.zeros_like(history),
              "history_gaps": np.zeros_like(history), "user_features": np.zeros((n, 0), np.int64),
              "retrieval_query": query[:, np.newaxis].astype(np.float32)}
    return inputs, np.eye(CANDIDATES, dtype=np.float32)[where]


def top1(model, inputs, clicks):
    scores = model.predict_batch({k: tf.constant(v) for k, v in inputs.items()})["scores"].numpy()
    return float(np.mean(np.argmax(scores, axis=1) == np.argmax(clicks, axis=1)))


def test_a_ranker_that_reads_retrieval_beats_one_that_does_not_when_retrieval_is_informative():
    rng = np.random.default_rng(0)
    table = np.zeros((NUM_INDICES, DIM), np.float32)
    table[2:] = rng.normal(0, 1, (NUM_INDICES - 2, DIM)) / np.sqrt(DIM) * 2
    train, clicks = informative_rows(rng, 3000, table)
    test, test_clicks = informative_rows(np.random.default_rng(1), 1000, table)
    accuracy = {}
    for name, kwargs in (("reads", {"retrieval_items": table}), ("blind", {})):
        model = build(["model.retrieval_score=true"] if kwargs else [], **kwargs)
        model.compile(tf.keras.optimizers.Adam(0.01))
        features = dict(train) if kwargs else {k: v for k, v in train.items() if k != "retrieval_query"}
        data = tf.data.Dataset.from_tensor_slices((features, {"clicks": clicks,
                                                              "rating": np.full(len(clicks), np.nan, np.float32)}))
        model.fit(data.shuffle(3000, seed=0).batch(64), epochs=3, verbose=0)
        accuracy[name] = top1(model, test if kwargs else {k: v for k, v in test.items() if k != "retrieval_query"},
                              test_clicks)
        if kwargs:
            reader = model
    # Retrieval alone (the argmax of its scores) is the reference the reader must reach.
    alone = float(np.mean(np.argmax(np.einsum("nd,ncd->nc", test["retrieval_query"][:, 0], table[test["candidates"]]),
                                    axis=1) == np.argmax(test_clicks, axis=1)))
    assert alone > 0.6 and accuracy["reads"] >= alone - 0.02, (accuracy, alone)
    assert accuracy["blind"] < 0.35, accuracy  # chance is 0.2
    # The network's retrieval scores are the dot products (max over the query vectors), and a
    # candidate's score does not depend on the other candidates of its list.
    out = reader.predict_batch({k: tf.constant(v[:8]) for k, v in test.items()})
    want = np.einsum("nd,ncd->nc", test["retrieval_query"][:8, 0], table[test["candidates"][:8]])
    np.testing.assert_allclose(out["retrieval_scores"].numpy(), want, rtol=1e-5, atol=1e-5)
    alone_inputs = {k: tf.constant(v[:8, :1] if k == "candidates" else v[:8]) for k, v in test.items()}
    np.testing.assert_allclose(reader.predict_batch(alone_inputs)["scores"].numpy()[:, 0],
                               out["scores"].numpy()[:, 0], rtol=1e-5, atol=1e-5)


def test_several_interests_score_a_candidate_by_their_best_vector():
    table = np.random.default_rng(2).normal(0, 1, (NUM_INDICES, DIM)).astype(np.float32)
    model = build(["model.retrieval_score=true", "model.retrieval_embeddings=true"], retrieval_items=table,
                  interests=3)
    inputs, _ = informative_rows(np.random.default_rng(3), 4, table)
    inputs["retrieval_query"] = np.random.default_rng(4).normal(0, 1, (4, 3, DIM)).astype(np.float32)
    out = model.predict_batch({k: tf.constant(v) for k, v in inputs.items()})
    want = np.einsum("nkd,ncd->nck", inputs["retrieval_query"], table[inputs["candidates"]]).max(axis=2)
    np.testing.assert_allclose(out["retrieval_scores"].numpy(), want, rtol=1e-5, atol=1e-5)


def planted_split():
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.synthetic import planted_sequences

    return leave_one_out(planted_sequences(num_items=40, num_users=50).interactions)


def test_training_rows_get_the_queries_serving_computes_from_the_same_history(tiny_model):
    from tfrec_attn.data.ranking_rows import sequence_event_rows
    from tfrec_attn.evaluation.retrieval import Retriever, query_vectors
    from tfrec_attn.training.hard_negatives import hard_negative_pool, retrieval_row_queries

    model, vocabulary = tiny_model
    split = planted_split()
    to_model = vocabulary.model_indices(split.item_vocab)
    rows = sequence_event_rows(split, to_model, include_validation=False, positions_per_user=5, max_len=20,
                               num_ratings=0)
    retriever = Retriever(model, vocabulary)
    queries = retrieval_row_queries(retriever, split, rows, include_validation=False)
    # Each row's history as serving would send it: every training event before the row's.
    histories, seen = [], 0
    for user, seq in enumerate(split.train_sequences()):
        count = int(np.sum(rows.users == user))
        for t in range(len(seq) - count, len(seq)):
            histories.append(seq[:t])
        seen += count
    assert seen == len(rows)
    for r in range(len(rows)):  # the ranker reads the newest 20 of the same history
        np.testing.assert_array_equal(rows.history[r][rows.history[r] > 0], to_model[histories[r]][-20:])
    served = query_vectors(model, histories, to_model)
    assert queries.shape == served.shape == (len(rows), 1, model.item_embeddings().shape[1])
    np.testing.assert_allclose(queries, served, rtol=1e-4, atol=1e-5)
    # The hard negatives are those queries' top items, the history and positive excluded.
    pool = hard_negative_pool(retriever, split, rows, vocabulary, 5, include_validation=False)
    table = np.asarray(model.item_embeddings())
    for row in (0, len(rows) // 2, len(rows) - 1):
        scores = served[row, 0] @ table.T
        scores[vocabulary.table_rows(np.r_[to_model[histories[row]], rows.positive[row]])] = -np.inf
        assert set(pool[row]) == set(np.argsort(-scores)[:5] + 2)


@pytest.fixture(scope="module")
def reader(tiny_model):
    """A seeded ranker over the tiny catalogue that reads the tiny retrieval model, and it."""
    from tfrec_attn.evaluation.retrieval import Retriever

    model, vocabulary = tiny_model
    table = np.zeros((vocabulary.num_indices, model.item_embeddings().shape[1]), np.float32)
    table[2:] = np.asarray(model.item_embeddings())
    ranker = build(["model.retrieval_score=true", "model.retrieval_embeddings=true", "model.max_len=6"],
                   retrieval_items=table)
    return ranker, Retriever(model, vocabulary)


def test_the_export_computes_the_retrieval_queries_in_the_graph_so_leave_one_out_recomputes_them(reader, tmp_path):
    from tfrec_attn.evaluation.retrieval import query_vectors
    from tfrec_attn.export.ranking import RankingServingModule, export_ranking
    from tfrec_attn.features.ranking import UserFeatureEncoder

    ranker, retriever = reader
    vocabulary = retriever.vocabulary
    encoder = UserFeatureEncoder([], [])
    history = ["i3", "i7", "", "i1", "i9", "i12"]
    candidates = [["i2", "i5", "i11"]]

    def network_scores(items):
        ids = vocabulary.model_indices([i for i in items if i])[np.newaxis]
        inputs = {"history": tf.constant(ids), "candidates": tf.constant(vocabulary.model_indices(candidates[0])[None]),
                  "history_ratings": tf.zeros_like(ids), "history_gaps": tf.zeros_like(ids),
                  "user_features": tf.zeros((1, 0), tf.int64),
                  "retrieval_query": tf.constant(query_vectors(retriever.model, ids))}
        return ranker.predict_batch(inputs)["scores"].numpy()[0]

    module = RankingServingModule(ranker, vocabulary, encoder, max_len=6, num_ratings=0, explain_positions=2,
                                  retrieval=retriever)
    scores = module.rank(tf.constant([history]), tf.constant(candidates))[0].numpy()[0]
    np.testing.assert_allclose(scores, network_scores(history), rtol=1e-5, atol=1e-5)
    # Without an item the served score is the network's with the retrieval queries of the
    # shortened history (not the full history's): the leave-one-out drop is the whole effect.
    without = [h if h != "i7" else "" for h in history]
    again = module.rank(tf.constant([without]), tf.constant(candidates))[0].numpy()[0]
    np.testing.assert_allclose(again, network_scores(without), rtol=1e-5, atol=1e-5)
    assert not np.allclose(again, scores)
    # The SavedModel, reloaded, answers the same.
    path = export_ranking(ranker, vocabulary, encoder, str(tmp_path), max_len=6, num_ratings=0, retrieval=retriever)
    loaded = tf.saved_model.load(path).signatures["serving_default"]
    served = loaded(history=tf.constant([history]), candidates=tf.constant(candidates))["scores"].numpy()[0]
    np.testing.assert_allclose(served, scores, rtol=1e-5, atol=1e-5)
    # A ranker that reads retrieval cannot be exported without it (nor one that does not, with it).
    with pytest.raises(ValueError, match="exported with the retrieval model it trained with"):
        RankingServingModule(ranker, vocabulary, encoder, max_len=6, num_ratings=0)


@pytest.mark.parametrize("overrides,field", [
    (["loss.distillation_weight=0.5"], "loss.distillation_weight"),
    (["model.retrieval_embeddings=true"], "model.retrieval_embeddings"),
    (["model.retrieval_score=true", "loss.distillation_temperature=0"], "loss.distillation_temperature"),
    (["recipe=rating", "model.retrieval_score=true"], "model.retrieval_score"),
])
def test_retrieval_inputs_misused_are_one_line_errors_naming_the_field(overrides, field):
    with pytest.raises(ConfigError) as error:
        load_config(None, ["recipe=ranking", *overrides])
    assert field in str(error.value) and "\n" not in str(error.value)


def test_a_ranker_that_reads_retrieval_without_a_retrieval_run_is_a_one_line_error():
    from tfrec_attn.data.synthetic import planted_sequences
    from tfrec_attn.training.ranking import RankingRecipe

    config = load_config(None, ["recipe=ranking", "model.retrieval_score=true"])
    with pytest.raises(ConfigError, match="model.retrieval_score: .*retrieval.run_dir"):
        RankingRecipe(config, planted_sequences(num_items=40, num_users=50))


def test_the_held_out_split_trains_on_everything_but_each_users_newest_events():
    split = planted_split()
    held = split.holding_out(3)
    assert list(held.item_vocab) == list(split.item_vocab) and list(held.user_ids) == list(split.user_ids)
    train, held_train = split.train_sequences(), held.train_sequences()
    for user in range(split.num_users):
        # The held-out model never trains on the user's newest 3 training events (nor later).
        np.testing.assert_array_equal(held_train[user], train[user][:max(len(train[user]) - 3, 0)])
    evaluated = set(held.evaluated.tolist())
    assert evaluated and evaluated <= set(split.evaluated.tolist())
    for user in evaluated:  # its validation and test targets are the first two held-out events
        assert held.sequences[user][-2] == train[user][len(train[user]) - 3]
        assert held.sequences[user][-1] == train[user][len(train[user]) - 2]
    with pytest.raises(ValueError, match="events must be >= 2"):
        split.holding_out(1)
