"""Several interests per user (model.user_tower.interests): the extractor, the loss's
selection, scoring by the max over interests, the `interests` signature and its labels."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfrec_attn.config import ConfigError, load_config
from tfrec_attn.layers.interests import CapsuleExtractor, InterestExtractor

ROOT = os.path.join(os.path.dirname(__file__), "..")
CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml")
FAST = [
    "model.embedding_dim=32", "model.num_blocks=1", "model.max_len=20", "model.dropout=0.1",
    "loss.type=full", "train.batch_size=32", "train.learning_rate=0.005", "train.epochs=15",
    "train.patience=100", "train.refit_with_validation=false",
]


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _histories(seed):
    """Two user-tower output sequences [2, 5, 4]: one padded after 3 positions, one full."""
    sequence = np.random.default_rng(seed).normal(size=(2, 5, 4)).astype(np.float32)
    return sequence, np.array([[True, True, True, False, False], [True, True, True, True, True]])


def test_extractor_matches_numpy_masks_padding_and_is_causal():
    extractor = InterestExtractor(num_interests=3, hidden_dim=8)
    sequence, mask = _histories(0)
    interests, attention = extractor(tf.constant(sequence), tf.constant(mask))
    w1, w2 = extractor.hidden.kernel.numpy(), extractor.heads.kernel.numpy()
    logits = np.tanh(sequence @ w1) @ w2  # [b, L, K]
    for b in range(2):
        expected = _softmax(logits[b][mask[b]].T)  # [K, real positions]
        np.testing.assert_allclose(attention.numpy()[b][:, mask[b]], expected, rtol=1e-5, atol=1e-6)
        assert np.all(attention.numpy()[b][:, ~mask[b]] == 0.0)  # padding gets exactly nothing
        np.testing.assert_allclose(interests.numpy()[b], expected @ sequence[b][mask[b]], rtol=1e-5, atol=1e-5)
    # Causal: the interests after position t read positions <= t only; at the last real
    # position they are the whole history's.
    causal, causal_attention = extractor(tf.constant(sequence), tf.constant(mask), causal=True)
    assert causal.shape == (2, 5, 3, 4)
    np.testing.assert_allclose(causal.numpy()[0, 2], interests.numpy()[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(causal.numpy()[1, 4], interests.numpy()[1], rtol=1e-5, atol=1e-5)
    assert np.all(np.triu(causal_attention.numpy()[1, :, 0, :], k=1) == 0.0)
    first = _softmax(logits[1, :2].T)  # after position 1: positions 0 and 1
    np.testing.assert_allclose(causal_attention.numpy()[1, 1, :, :2], first, rtol=1e-5, atol=1e-6)
    # An empty history: zero interests, no attention anywhere.
    empty, empty_attention = extractor(tf.constant(sequence), tf.zeros((2, 5), tf.bool))
    assert np.all(empty.numpy() == 0) and np.all(empty_attention.numpy() == 0)
    clone = InterestExtractor.from_config(extractor.get_config())
    assert (clone.num_interests, clone.hidden_dim) == (3, 8)


def _routing(sequence, maps, iterations):
    """Dynamic routing of one history [n, d] (real positions only) in numpy: [K, d], [K, n]."""
    u = np.einsum("kde,je->kjd", maps, sequence)
    logits = np.zeros(u.shape[:2])
    for round_ in range(iterations):
        share = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)  # each item over the capsules
        s = np.einsum("kj,kjd->kd", share, u)
        norm2 = (s ** 2).sum(axis=-1, keepdims=True)
        v = s * norm2 / (1 + norm2) / np.sqrt(norm2)
        if round_ < iterations - 1:
            logits = logits + np.einsum("kd,kjd->kj", v, u)
    return v, share / share.sum(axis=1, keepdims=True)


def test_capsule_routing_matches_numpy_masks_padding_and_is_causal():
    extractor = CapsuleExtractor(num_interests=3, iterations=3)
    sequence, mask = _histories(1)
    interests, attention = extractor(tf.constant(sequence), tf.constant(mask))
    maps = extractor.maps.numpy()
    for b in range(2):
        expected, expected_attention = _routing(sequence[b][mask[b]], maps, 3)
        np.testing.assert_allclose(interests.numpy()[b], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(attention.numpy()[b][:, mask[b]], expected_attention, rtol=1e-4, atol=1e-6)
        assert np.all(attention.numpy()[b][:, ~mask[b]] == 0.0)  # padding is routed nowhere
    assert not np.allclose(interests.numpy()[1, 0], interests.numpy()[1, 1])  # the capsules differ
    # Causal: after position t only positions <= t are routed; at the last real position it is
    # the whole history's routing; after position 1, the routing of the first two items.
    causal, causal_attention = extractor(tf.constant(sequence), tf.constant(mask), causal=True)
    assert causal.shape == (2, 5, 3, 4)
    np.testing.assert_allclose(causal.numpy()[0, 2], interests.numpy()[0], rtol=1e-4, atol=1e-5)
    first, first_attention = _routing(sequence[1, :2], maps, 3)
    np.testing.assert_allclose(causal.numpy()[1, 1], first, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(causal_attention.numpy()[1, 1, :, :2], first_attention, rtol=1e-4, atol=1e-6)
    assert np.all(causal_attention.numpy()[1, 1, :, 2:] == 0.0)
    empty, empty_attention = extractor(tf.constant(sequence), tf.zeros((2, 5), tf.bool))
    assert np.all(empty.numpy() == 0) and np.all(empty_attention.numpy() == 0)
    clone = CapsuleExtractor.from_config(extractor.get_config())
    assert (clone.num_interests, clone.iterations) == (3, 3)


def test_capsule_extraction_builds_a_multi_interest_model_that_round_trips():
    model, _ = _model(["model.user_tower.interests=2", "model.user_tower.extraction=capsule",
                       "model.user_tower.routing_iterations=2"])
    assert isinstance(model.extractor, CapsuleExtractor) and model.extractor.iterations == 2
    history = tf.constant([[0, 0, 5, 7, 9], [0, 3, 4, 11, 12]], tf.int64)
    queries, attention, _ = model.interests(history)
    assert queries.shape[:2] == (2, 2)
    clone = type(model).from_config(model.get_config())
    clone.build_weights()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.interests(history)[0].numpy(), queries.numpy(), rtol=1e-5, atol=1e-6)


def _model(extra=(), num_items=30):
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.synthetic import planted_sequences
    from tfrec_attn.features.vocab import ItemVocabulary
    from tfrec_attn.training.retrieval import build_model

    tf.keras.utils.set_random_seed(0)
    config = load_config(CONFIG, ["model.embedding_dim=8", "model.num_blocks=1", "model.max_len=10",
                                  "model.user_tower.selection=hard", "model.user_tower.residual=false",
                                  "model.user_tower.diversity_weight=0", *extra])
    vocabulary = ItemVocabulary(leave_one_out(planted_sequences(num_items=num_items, num_users=40).interactions).item_vocab)
    return build_model(config, vocabulary), vocabulary


def test_one_interest_is_todays_tower_and_scores_take_the_max_over_interests():
    from tfrec_attn.models import MultiInterestRetrievalModel, SequentialRetrievalModel

    single, _ = _model()
    assert type(single) is SequentialRetrievalModel and "extractor" not in single.get_config()
    model, _ = _model(["model.user_tower.interests=3"])
    assert isinstance(model, MultiInterestRetrievalModel)
    history = tf.constant([[2, 5, 7, 0, 0], [9, 3, 1, 4, 6]], tf.int64)  # padding and an OOV (1)
    queries = model(history).numpy()
    assert queries.shape == (2, 3, 8)
    table = model.item_embeddings().numpy()
    np.testing.assert_allclose(model.score_items(history).numpy(), (queries @ table.T).max(axis=1), rtol=1e-5,
                               atol=1e-5)
    # The OOV is no history item: its presence changes nothing.
    np.testing.assert_allclose(model(tf.constant([[9, 3, 4, 6]], tf.int64)).numpy(), queries[1:], rtol=1e-5,
                               atol=1e-6)
    # Rebuilt from its config with the same weights: the same scores.
    clone = MultiInterestRetrievalModel.from_config(model.get_config()).build_weights()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone.score_items(history).numpy(), model.score_items(history).numpy(), rtol=1e-6)


def test_training_picks_the_interest_closest_to_each_target_and_penalises_collapse():
    model, _ = _model(["model.user_tower.interests=3", "model.user_tower.diversity_weight=0.5",
                       "model.user_tower.diversity_margin=-1"])
    history = tf.constant([[2, 5, 7, 3], [9, 3, 4, 0]], tf.int64)
    labels = tf.constant([[5, 7, 3, 8], [3, 4, 0, 0]], tf.int64)
    chosen, extra = model.training_queries(history, labels)
    sequence = model.encode(history)["sequence"]
    every, _ = model.extractor(sequence, history >= 2, causal=True)  # [b, L, K, d]
    every = every.numpy()
    targets = model.candidate_vectors(tf.maximum(labels, 0)).numpy()
    best = np.argmax(np.einsum("blkd,bld->blk", every, targets), axis=-1)
    np.testing.assert_allclose(chosen.numpy(), np.take_along_axis(every, best[..., None, None], axis=2)[:, :, 0],
                               rtol=1e-5, atol=1e-6)
    valid = labels.numpy() >= 2
    unit = every / np.linalg.norm(every, axis=-1, keepdims=True)
    cosines = [[unit[b, t, i] @ unit[b, t, j] for i in range(3) for j in range(3) if i < j] for b in range(2)
               for t in range(4)]
    expected = 0.5 * np.mean(np.array(cosines).reshape(2, 4, 3).mean(axis=-1)[valid])
    assert float(extra) == pytest.approx(expected, rel=1e-4)
    # With a margin only the pairs closer than it cost, by their excess.
    hinged, _ = _model(["model.user_tower.interests=3", "model.user_tower.diversity_weight=0.5",
                        "model.user_tower.diversity_margin=0.1"])
    hinged.set_weights(model.get_weights())
    excess = np.maximum(np.array(cosines) - 0.1, 0).reshape(2, 4, 3).mean(axis=-1)
    assert float(hinged.training_queries(history, labels)[1]) == pytest.approx(0.5 * excess[valid].mean(), rel=1e-4)
    # Sampled selection draws from the affinities: over many draws every interest is used.
    sampled, _ = _model(["model.user_tower.interests=3", "model.user_tower.selection=sampled", "model.dropout=0",
                         "model.user_tower.selection_temperature=100"])
    sampled.compile(tf.keras.optimizers.Adam(1e-3))
    picks = set()
    for step in range(8):
        sampled.optimizer.iterations.assign(step)
        queries, _ = sampled.training_queries(history, labels, training=True)
        seq = sampled.encode(history)["sequence"]
        all_queries, _ = sampled.extractor(seq, history >= 2, causal=True)
        # (after the first position every interest is that one item: look at the last)
        match = np.isclose(all_queries.numpy()[0, 3], queries.numpy()[0, 3][None], atol=1e-6).all(axis=-1)
        assert match.sum() == 1
        picks.add(int(np.argmax(match)))
    assert len(picks) >= 2


def test_the_balance_loss_is_the_switch_transformer_loss_and_pushes_targets_off_the_busiest_interest():
    from tfrec_attn.models.multi_interest import balance_loss

    rng = np.random.default_rng(0)
    affinity = rng.normal(size=(2, 5, 3)).astype(np.float32)
    valid = rng.random((2, 5)) < 0.7
    flat, w = affinity.reshape(-1, 3), valid.reshape(-1).astype(np.float32)
    wins = np.bincount(flat.argmax(-1), weights=w, minlength=3) / w.sum()
    soft = np.exp(flat / 2.0) / np.exp(flat / 2.0).sum(-1, keepdims=True)
    expected = 3 * np.sum(wins * (soft * w[:, None]).sum(0) / w.sum())
    assert float(balance_loss(affinity, valid, temperature=2.0)) == pytest.approx(expected, rel=1e-5)
    # One interest winning every target with certainty costs K; an even split costs 1.
    collapsed = np.tile(np.array([[50.0, 0.0, 0.0]], np.float32), (6, 1))
    assert float(balance_loss(collapsed, np.ones(6))) == pytest.approx(3.0, rel=1e-4)
    even = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]] * 50
    assert float(balance_loss(even, np.ones(6))) == pytest.approx(1.0, rel=1e-4)
    assert float(balance_loss(affinity, np.zeros((2, 5)))) == 0.0  # no target, no loss
    # The gradient lowers the affinity of the interest that wins most and raises the others'.
    busy = tf.Variable(np.array([[2.0, 1.0, 0.0]] * 4 + [[0.0, 2.0, 1.0]], np.float32))
    with tf.GradientTape() as tape:
        loss = balance_loss(busy, tf.ones(5))
    step = -tape.gradient(loss, busy).numpy().sum(axis=0)
    assert step[0] < 0 and step[2] > 0
    # In training it is added to the loss's extra term, weighted.
    model, _ = _model(["model.user_tower.interests=3"])
    balanced, _ = _model(["model.user_tower.interests=3", "model.user_tower.balance_weight=0.5"])
    balanced.set_weights(model.get_weights())
    history = tf.constant([[2, 5, 7, 3], [9, 3, 4, 0]], tf.int64)
    labels = tf.constant([[5, 7, 3, 8], [3, 4, 0, 0]], tf.int64)
    queries, extra = balanced.training_queries(history, labels)
    sequence = model.encode(history)["sequence"]
    every = model.extractor(sequence, history >= 2, causal=True)[0].numpy()
    targets = model.candidate_vectors(tf.maximum(labels, 0)).numpy()
    expected = 0.5 * float(balance_loss(np.einsum("blkd,bld->blk", every, targets), labels.numpy() >= 2))
    assert float(extra) == pytest.approx(expected, rel=1e-4)
    assert model.training_queries(history, labels)[1] is None
    np.testing.assert_allclose(queries.numpy(), model.training_queries(history, labels)[0].numpy(), rtol=1e-5)


@pytest.mark.parametrize("override, message", [
    ("model.user_tower.interests=0", "model.user_tower.interests=0 must be >= 1"),
    ("model.user_tower.interests=300", "model.user_tower.interests=300 must be <= model.max_len=200"),
    ("model.user_tower.selection=soft", "model.user_tower.selection='soft' must be one of hard, sampled"),
    ("model.user_tower.extraction=lstm", "model.user_tower.extraction='lstm' must be one of self_attentive, capsule"),
    ("model.user_tower.routing_iterations=0", "model.user_tower.routing_iterations=0 must be >= 1"),
    ("model.user_tower.balance_weight=-1", "model.user_tower.balance_weight=-1.0 must be >= 0"),
    ("model.user_tower.aggregation=sum", "model.user_tower.aggregation='sum' must be one of max, proportional"),
])
def test_bad_interest_configs_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(CONFIG, [override])


def test_interests_need_one_query_space_and_an_exact_index():
    with pytest.raises(ConfigError, match=r"model.user_tower.interests=4 > 1 needs one query space"):
        load_config(CONFIG, ["model.user_tower.interests=4", "model.item_tower.type=ensemble"])
    with pytest.raises(ConfigError, match=r"export.index='scann' cannot take the max over"):
        load_config(CONFIG, ["model.user_tower.interests=4", "export.index=scann"])


@pytest.fixture(scope="module")
def mixed_runs(tmp_path_factory):
    """K = 1 and K = 2 trained on users who each like two of four disjoint clusters."""
    from tfrec_attn.data.synthetic import mixed_interest_sequences
    from tfrec_attn.training import train

    data = mixed_interest_sequences()
    out = tmp_path_factory.mktemp("mixed")
    runs = {k: train(load_config(CONFIG, FAST + [f"model.user_tower.interests={k}"]), data, str(out / f"k{k}"),
                     verbose=0) for k in (1, 2)}
    return data, runs, out


def _clusters(vocabulary, ids):
    return np.array([int(vocabulary.item_ids[i - 2][1]) for i in ids])


HISTORY = ["c0i1", "c2i3", "c0i4", "c2i5", "c0i2", "c2i7"]


def test_two_interests_split_a_two_taste_history_and_each_retrieves_its_own(mixed_runs):
    _, runs, _ = mixed_runs
    model, vocabulary = runs[2].model, runs[2].recipe.vocabulary
    history = tf.constant([vocabulary.model_indices(HISTORY)])
    queries, attention, compact = model.interests(history)
    clusters = _clusters(vocabulary, compact.numpy()[0])
    mass = np.stack([[attention.numpy()[0, k][clusters == c].sum() for c in (0, 2)] for k in range(2)])
    assert mass.max(axis=1).min() > 0.9  # each interest attends to one cluster ...
    assert set(mass.argmax(axis=1)) == {0, 1}  # ... and not the same one
    table = model.item_embeddings().numpy()
    for k in range(2):
        top = np.argsort(-(queries.numpy()[0, k] @ table.T))[:10] + 2
        assert np.mean(_clusters(vocabulary, top) == (0, 2)[mass[k].argmax()]) >= 0.8  # its own cluster
    # One vector sits between the tastes: its top-10 mixes both clusters.
    single, single_vocabulary = runs[1].model, runs[1].recipe.vocabulary
    query = single(tf.constant([single_vocabulary.model_indices(HISTORY)])).numpy()[0]
    top = np.argsort(-(query @ single.item_embeddings().numpy().T))[:10] + 2
    assert 0.2 <= np.mean(_clusters(single_vocabulary, top) == 0) <= 0.8
    # The epoch logs carry the collapse diagnostics: no collapse, both interests win targets.
    logged = runs[2].metrics["validation"]
    assert logged["val_interest_cosine"] < 0.5 and logged["val_interest_min_share"] > 0.2


@pytest.fixture(scope="module")
def mixed_export(mixed_runs):
    """Version 1 of the K = 2 model's export (and of the K = 1 one's)."""
    _, runs, out = mixed_runs
    return {k: runs[k].recipe.export(runs[k].model, str(out / f"export{k}"))[0] for k in (1, 2)}


def test_interests_signature_reloads_in_a_fresh_process_with_labels(mixed_runs, mixed_export):
    data, runs, out = mixed_runs
    run = runs[2]
    path = mixed_export[2]
    module = tf.saved_model.load(path)
    assert "interests" in module.signatures
    history = tf.constant([HISTORY + [""]])
    here = {k: v.numpy() for k, v in module.signatures["interests"](history=history).items()}
    served = module.signatures["serving_default"](history=history)
    script = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({path!r})\n"
        "h = tf.constant([json.loads(sys.argv[1])])\n"
        "out = {k: v.numpy().tolist() for k, v in m.signatures['interests'](history=h).items()}\n"
        "out = {k: [[[x.decode() for x in r] if isinstance(r, list) and r and isinstance(r[0], bytes) else\n"
        "            (r.decode() if isinstance(r, bytes) else r) for r in row] for row in v] for k, v in out.items()}\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(HISTORY + [""])], capture_output=True, text=True,
                          env=env, timeout=300, check=True)
    there = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("vectors", "weights", "attention"):
        np.testing.assert_allclose(np.array(there[name]), here[name], rtol=1e-5, atol=1e-6)
    assert there["labels"] == [[x.decode() for x in here["labels"][0]]]
    # What the labels say: each interest's genre is the cluster it attends to, its top items
    # come from that cluster, and the weights split the history in two.
    memory = run.model.interests(tf.constant([run.recipe.vocabulary.model_indices(HISTORY)]))
    np.testing.assert_allclose(here["vectors"], memory[0].numpy(), rtol=1e-5, atol=1e-6)
    genres = {x.decode() for x in here["genres"][0, :, 0]}
    assert genres == {"Western", "Horror"}
    for k in range(2):
        genre = here["genres"][0, k, 0].decode()
        assert here["labels"][0, k].decode().startswith(genre)
        cluster = {"Western": "c0", "Horror": "c2"}[genre]
        assert all(item.decode().startswith(cluster) for item in here["top_items"][0, k])
    np.testing.assert_allclose(here["weights"][0], [0.5, 0.5])
    assert here["attention"][0, :, -1].tolist() == [0.0, 0.0]  # the padding slot
    # serving_default keeps its contract and names the interest each item comes from.
    ids = [x.decode() for x in served["item_ids"].numpy()[0][:10]]
    interest = served["interest"].numpy()[0][:10]
    by_genre = {here["genres"][0, k, 0].decode(): k for k in range(2)}
    owners = [(item, int(k), by_genre["Western" if item.startswith("c0") else "Horror"])
              for item, k in zip(ids, interest) if item[:2] in ("c0", "c2")]
    assert np.mean([k == wanted for _, k, wanted in owners]) >= 0.8
    assert not set(ids) & set(HISTORY)
    # rank scores each candidate by its best interest, as serving_default does.
    candidates = tf.constant([["c1i0", "c0i6", "c2i9", "nope"]])
    ranked = module.signatures["rank"](history=history, candidates=candidates)["scores"].numpy()[0]
    vectors = run.model.candidate_vectors(tf.constant(run.recipe.vocabulary.model_indices(["c1i0", "c0i6", "c2i9"])))
    np.testing.assert_allclose(ranked[:3], (here["vectors"][0] @ vectors.numpy().T).max(axis=0), rtol=1e-5)
    assert ranked[3] == -np.inf


def test_item_terms_weight_genres_by_rarity_and_keep_salient_words():
    from tfrec_attn.data import Item
    from tfrec_attn.features.item_terms import genre_terms, word_terms

    items = [None, None,
             Item("a", "Red River outlaw", ("Western", "Drama")),
             Item("b", "Blue outlaw ride", ("Western", "Drama")),
             Item("c", "Green sky dream", ("Drama",)),
             Item("d", "Dream of the sky", ("Drama", "Musical"))]
    genres = genre_terms(items)
    # Drama is on every item: weight 0 (idf log(5/5)); Western on two, Musical on one.
    assert genres.top(2) == ["Western"] and genres.top(5) == ["Musical"]
    assert genres.top(0) == [] and genres.weights[2].sum() == pytest.approx(1.0)
    words = word_terms(items, max_df=0.5)
    # Words on two items of four stay; words on one item only (river, blue) are dropped.
    assert set(words.top(2, 5)) == {"outlaw"} and set(words.top(4, 5)) == {"dream", "sky"}


def test_labels_rank_terms_by_mass_or_by_mass_times_exclusivity_as_numpy_does():
    from tfrec_attn.export.interests import InterestLabels
    from tfrec_attn.features.item_terms import ItemTerms

    # Indices 2, 3, 4 (0, 1 unused): a Drama each, and a Western, a Musical, a Noir.
    vocabulary = ["", "Drama", "Western", "Musical", "Noir"]
    term_ids = np.array([[0, 0], [0, 0], [1, 2], [1, 3], [1, 4]], np.int32)
    weights = np.array([[0, 0], [0, 0], [.5, .5], [.5, .5], [.5, .5]], np.float32)
    genres, words, ids = ItemTerms(vocabulary, term_ids, weights), ItemTerms.empty(5), ["a", "b", "c"]
    compact = tf.constant([[2, 3, 4, 0]], tf.int64)  # a padded position at the end
    attention = np.array([[[.85, .075, .075, 0], [.075, .85, .075, 0], [.075, .075, .85, 0]]], np.float32)
    # numpy: each term's attention mass per interest, then mass x its share over the interests.
    mass = np.zeros((3, len(vocabulary)))
    for k in range(3):
        for position, index in enumerate(compact.numpy()[0]):
            for term, weight in zip(term_ids[index], weights[index]):
                mass[k, term] += attention[0, k, position] * weight
    frex = mass * np.divide(mass, mass.sum(axis=0, keepdims=True), out=np.zeros_like(mass), where=mass > 0)

    def labels(exclusive, attention=attention):
        labeler = InterestLabels(genres, words, ids, exclusive=exclusive)
        return labeler(compact, tf.constant(attention))["genres"].numpy().astype(str)[0].tolist()

    for exclusive, rank_by in ((True, frex), (False, mass)):
        expected = [[vocabulary[t] for t in np.argsort(-rank_by[k], kind="stable")[:2]] for k in range(3)]
        assert labels(exclusive) == expected
    # By mass alone Drama, on every item, leads every interest's label; by mass x exclusivity
    # each interest is named first by the genre only it attends to.
    assert labels(False) == [["Drama", "Western"], ["Drama", "Musical"], ["Drama", "Noir"]]
    assert labels(True) == [["Western", "Drama"], ["Musical", "Drama"], ["Noir", "Drama"]]
    # One interest: every term's exclusivity is 1, the ranking is the mass's.
    assert labels(True, attention[:, 1:2]) == labels(False, attention[:, 1:2]) == [["Drama", "Musical"]]


def test_max_selection_scores_every_candidate_by_its_best_interest_inside_the_softmax():
    from tfrec_attn.tasks.next_item import Candidates, FullSoftmaxTask, dot_scores, paired_scores

    rng = np.random.default_rng(1)
    queries = rng.normal(size=(3, 2, 4)).astype(np.float32)  # 3 positions x 2 interests
    table = rng.normal(size=(6, 4)).astype(np.float32)  # padding, OOV, 4 items
    labels = np.array([2, 3, 5])
    candidates = Candidates(embed=lambda ids: tf.gather(table, ids), table=lambda: tf.constant(table))
    loss = float(FullSoftmaxTask(temperature=0.5)(tf.constant(queries), tf.constant(labels), candidates))
    logits = (queries @ table.T).max(axis=1) / 0.5
    logits = logits[:, 2:]
    expected = np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(3), labels - 2])
    assert loss == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(dot_scores(tf.constant(queries), tf.constant(table)).numpy(),
                               (queries @ table.T).max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(paired_scores(tf.constant(queries), tf.constant(table[labels])).numpy(),
                               np.einsum("nkd,nd->nk", queries, table[labels]).max(axis=1), rtol=1e-6)
    # The model hands the task all K queries of every position (no pick).
    model, _ = _model(["model.user_tower.interests=2", "model.user_tower.selection=max", "loss.type=full"])
    history = tf.constant([[2, 5, 7, 3]], tf.int64)
    every, _ = model.training_queries(history, tf.constant([[5, 7, 3, 8]], tf.int64))
    assert every.shape == (1, 4, 2, 8)
    model.compile(tf.keras.optimizers.Adam(1e-3))
    assert np.isfinite(float(model.compute_loss(({"history": history}, tf.constant([[5, 7, 3, 0]], tf.int64)))))
    with pytest.raises(ConfigError, match=r"loss.type='in_batch' takes one query per position"):
        load_config(CONFIG, ["model.user_tower.interests=2", "model.user_tower.selection=max", "loss.type=in_batch"])


def test_interests_command_prints_each_interest_with_its_label_items_and_recommendations(mixed_export, capsys):
    from tfrec_attn.app.cli import main

    assert main(["interests", mixed_export[2], "--history", ",".join(HISTORY), "-k", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [line for line in lines if line.startswith("interest ")]
    assert len(heads) == 2 and {h.split(":")[1].split("(")[0].strip() for h in heads} == {"Western", "Horror"}
    assert all("(50% of the history)" in h for h in heads)
    # Each interest's recommendations come from its own cluster (c0 = Western, c2 = Horror),
    # borderline items aside.
    current, matches = None, []
    for line in lines:
        if line.startswith("interest "):
            current = "c0" if "Western" in line else "c2"
        elif line.startswith("    "):
            matches.append(line.split()[0].startswith(current))
    assert len(matches) == 6 and np.mean(matches) >= 0.8
    assert main(["interests", mixed_export[1], "--history", "c0i1"]) == 2
    assert "no `interests` signature" in capsys.readouterr().err


def _drifting_users(num_users=300, seed=0):
    """Users who move from one cluster to the next: before a random switch they pick items of
    cluster c, after it of cluster c + 1 (mod 4). A history's own genre counts point back at c."""
    from tfrec_attn.data import Dataset, Interactions, Item
    from tfrec_attn.data.synthetic import CLUSTER_GENRES, NAME_WORDS

    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(num_users):
        start, length = int(rng.integers(4)), int(rng.integers(20, 28))
        switch = int(rng.integers(8, 14))
        for step in range(length):
            cluster = start if step < switch else (start + 1) % 4
            users.append(f"u{user}")
            items.append(f"c{cluster}i{int(rng.integers(10))}")
            times.append(1_000_000 + 60 * step)
    catalogue = {f"c{c}i{j}": Item(f"c{c}i{j}", f"{CLUSTER_GENRES[c]} {NAME_WORDS[j]}", (CLUSTER_GENRES[c],))
                 for c in range(4) for j in range(10)}
    return Dataset("drift", Interactions.from_rows(users, items, times, np.full(len(users), np.nan)), catalogue)


def test_interest_profile_predicts_where_a_user_drifts_and_is_served_as_trained(tmp_path, capsys):
    """``model.user_tower.profile``: the run fits the head after training and keeps it in
    RUN/interest_profile/; it beats the history's own genre counts on the users' held-out
    next 10 items, and the export's ``profile`` signature, reloaded in a fresh TF-only
    process, gives the in-memory head's distributions on raw ids."""
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.models.interest_profile import InterestProfileHead, load_profile
    from tfrec_attn.training import train
    from tfrec_attn.training.interest_profile import (
        InterestProfile,
        distribution,
        future_split,
        genre_table,
        profile_metrics,
    )

    data = _drifting_users()
    reduced, held, futures = future_split(leave_one_out(data.interactions), horizon=10)
    # The held-out users' last 10 events are gone from what trains.
    assert all(len(reduced.sequences[u]) + 10 == len(leave_one_out(data.interactions).sequences[u]) for u in held)
    config = load_config(CONFIG, FAST + ["model.user_tower.interests=2", "train.epochs=8",
                                         "model.user_tower.profile=true"])
    run = train(config, data, str(tmp_path / "run"), split=reduced, verbose=0)
    served = run.recipe.profile
    genres, table = genre_table(data, reduced)
    assert served.genres == genres and len(genres) == 4
    profile = InterestProfile(served.head, run.model, run.recipe.vocabulary, reduced, genres, table, served.prior,
                              served.smoothing)
    histories = [reduced.sequences[u] for u in held]
    targets = np.stack([distribution(table, f) for f in futures])
    head = profile_metrics(profile.predict(histories), targets)
    counts = profile_metrics(profile.history_baseline(histories), targets)
    assert head["cross_entropy"] < counts["cross_entropy"] - 0.1
    assert head["top_genre_accuracy"] > counts["top_genre_accuracy"]
    # Each baseline row is a distribution; the head rebuilds from its config, and the run's
    # files give the same head.
    np.testing.assert_allclose(profile.history_baseline(histories).sum(axis=1), 1.0, rtol=1e-5)
    assert InterestProfileHead.from_config(served.head.get_config()).num_genres == 4
    saved = load_profile(os.path.join(run.output_dir, "interest_profile"))
    for a, b in zip(saved.head.get_weights(), served.head.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Served: the `profile` signature of the run's export, in a fresh process.
    (path,) = run.export(str(tmp_path / "export"))
    raw = [list(reduced.item_vocab[h]) for h in histories[:5]]
    width = max(map(len, raw))
    raw = [h + [""] * (width - len(h)) for h in raw]
    script = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({path!r})\n"
        "out = m.signatures['profile'](history=tf.constant(json.loads(sys.argv[1])))\n"
        "print(json.dumps({k: (np.char.decode(v.numpy().astype(bytes)) if v.dtype == tf.string else v.numpy())"
        ".tolist() for k, v in out.items()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(raw)], capture_output=True, text=True,
                          env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    there = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(there["genres"], profile.predict(histories[:5]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(there["history_genres"], profile.history_baseline(histories[:5]), rtol=1e-5,
                               atol=1e-6)
    assert there["genre_names"][0] == genres
    want = np.argsort(-profile.predict(histories[:5]), axis=1, kind="stable")[:, :3]
    assert there["top_genres"] == [[genres[g] for g in row] for row in want]
    # Exported again from the run's files alone (no dataset): the same labels and profile.
    from tfrec_attn.training import RunDirectory

    (again,) = RunDirectory(run.output_dir).export(str(tmp_path / "from_files"))
    request = tf.constant([raw[0]])
    first, second = (tf.saved_model.load(p) for p in (path, again))
    labels = first.signatures["interests"](history=request)["labels"].numpy()[0]
    assert all(labels) and labels.tolist() == second.signatures["interests"](history=request)["labels"].numpy()[0].tolist()
    np.testing.assert_allclose(second.signatures["profile"](history=request)["genres"].numpy()[0], there["genres"][0],
                               rtol=1e-5, atol=1e-7)
    # The command prints the profile above the interests.
    from tfrec_attn.app.cli import main

    assert main(["interests", path, "--history", *[i for i in raw[0] if i]]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"next 10 items, predicted: {genres[want[0][0]]} ") and "(the history: " in printed[0]
    assert printed[1].startswith("interest 1: ")


def test_an_interest_profile_needs_one_query_space_and_genres(tmp_path):
    from tfrec_attn.data import Dataset, Interactions, Item
    from tfrec_attn.training import train

    with pytest.raises(ConfigError, match="model.user_tower.profile.*needs one query space"):
        load_config(CONFIG, ["model.user_tower.profile=true", "model.item_tower.type=ensemble"])
    rng = np.random.default_rng(0)
    users = [f"u{u}" for u in range(40) for _ in range(15)]
    items = [f"i{int(rng.integers(20))}" for _ in users]
    data = Dataset("plain", Interactions.from_rows(users, items, np.arange(len(users)) + 1_000_000,
                                                   np.full(len(users), np.nan)),
                   {f"i{j}": Item(f"i{j}", f"item {j}", ()) for j in range(20)})
    config = load_config(CONFIG, FAST + ["train.epochs=1", "model.user_tower.profile=true"])
    with pytest.raises(ConfigError, match="model.user_tower.profile.*carry none"):
        train(config, data, str(tmp_path / "run"), verbose=0)


def test_history_items_are_masked_on_every_interest():
    from tfrec_attn.evaluation.protocol import without_history

    scores = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)  # users x interests x items
    masked = without_history(scores, [[1, 4], []])
    assert np.all(np.isneginf(masked[0][:, [1, 4]])) and np.all(masked[0][:, [0, 2, 3]] == scores[0][:, [0, 2, 3]])
    np.testing.assert_array_equal(masked[1], scores[1])
    flat = without_history(scores[:, 0], [[1, 4], []])  # [users, items], as before
    assert np.isneginf(flat[0, [1, 4]]).all() and flat[0, 0] == 0 and np.isfinite(flat[1]).all()


def _dhondt(scores, weights):
    """numpy reference: each interest's ranks among the items not excluded; w_k / rank, max over k."""
    b, k, n = scores.shape
    weights = np.where(weights.sum(axis=1, keepdims=True) > 0, weights, 1.0 / k)
    merged = np.full((b, n), -np.inf)
    for r in range(b):
        for i in range(k):
            order = [j for j in np.argsort(-scores[r, i], kind="stable") if np.isfinite(scores[r, i, j])]
            for rank, j in enumerate(order, start=1):
                merged[r, j] = max(merged[r, j], weights[r, i] / rank)
    return merged


def test_proportional_aggregation_deals_the_list_to_the_interests_by_their_weight():
    from tfrec_attn.layers.interests import aggregate_interests

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 2, 12)).astype(np.float32)
    scores[0, 0, :6] += 10  # interest 0 loves items 0-5, interest 1 items 6-11
    scores[0, 1, 6:] += 10
    scores[:, :, 3] = -np.inf  # a history item: excluded on every interest
    weights = np.array([[0.7, 0.3], [0.0, 0.0], [0.5, 0.5]], np.float32)  # row 1: an empty history
    merged, source = (x.numpy() for x in aggregate_interests(tf.constant(scores), tf.constant(weights),
                                                              "proportional"))
    np.testing.assert_allclose(merged, _dhondt(scores, weights), rtol=1e-6)
    assert np.isneginf(merged[:, 3]).all()
    # 0.7 / 0.3: of the top 4, three are interest 0's best and one is interest 1's best.
    top = np.argsort(-merged[0], kind="stable")[:4]
    assert sorted(top[:2]) == sorted(np.argsort(-scores[0, 0])[:2]) and top[2] == np.argmax(scores[0, 1])
    assert source[0, top].tolist() == [0, 0, 1, 0]
    # `max` is the best interest's score, as before.
    best, owner = (x.numpy() for x in aggregate_interests(tf.constant(scores), tf.constant(weights), "max"))
    np.testing.assert_array_equal(best, scores.max(axis=1))
    np.testing.assert_array_equal(owner[:, :3], scores[:, :, :3].argmax(axis=1))
    with pytest.raises(ValueError, match="aggregation must be one of max, proportional"):
        aggregate_interests(tf.constant(scores), tf.constant(weights), "sum")


def test_a_proportional_model_lists_both_tastes_and_its_export_serves_what_it_evaluates(mixed_runs, tmp_path):
    from tfrec_attn.evaluation.protocol import without_history
    from tfrec_attn.models import MultiInterestRetrievalModel

    _, runs, _ = mixed_runs
    run = runs[2]
    vocabulary = run.recipe.vocabulary
    model = MultiInterestRetrievalModel.from_config({**run.model.get_config(), "aggregation": "proportional"})
    model.build_weights().set_weights(run.model.get_weights())
    history = vocabulary.model_indices(HISTORY)
    raw = model.score_items(tf.constant([history])).numpy()
    assert np.isfinite(raw).all() and (raw[0, history - 2] == 0).all() and (np.delete(raw[0], history - 2) > 0).all()
    scores = without_history(raw, [list(history - 2)])[0]
    top = np.argsort(-scores, kind="stable")[:10] + 2
    clusters = _clusters(vocabulary, top)
    assert (clusters == 0).sum() >= 4 and (clusters == 2).sum() >= 4  # the weights are 0.5 / 0.5: half each
    module = tf.saved_model.load(run.recipe.export(model, str(tmp_path))[0])
    served = module.signatures["serving_default"](history=tf.constant([HISTORY]))
    assert [x.decode() for x in served["item_ids"].numpy()[0, :10]] == [vocabulary.item_ids[i - 2] for i in top]
    np.testing.assert_allclose(served["scores"].numpy()[0, :10], scores[top - 2], rtol=1e-5)
    queries, _, compact = model.interests(tf.constant([history]))
    _, source = model.merge_scores(tf.constant([history]), queries,
                                   tf.einsum("bkd,nd->bkn", queries, model.item_embeddings()), compact)
    np.testing.assert_array_equal(served["interest"].numpy()[0, :10], source.numpy()[0, top - 2])
    candidates = [vocabulary.item_ids[i - 2] for i in top[[0, 5, 9]]] + ["c0i1", "nope"]  # c0i1: in the history
    ranked = module.signatures["rank"](history=tf.constant([HISTORY]), candidates=tf.constant([candidates]))
    np.testing.assert_allclose(ranked["scores"].numpy()[0, :3], scores[top[[0, 5, 9]] - 2], rtol=1e-5)
    assert np.isneginf(ranked["scores"].numpy()[0, 3:]).all()
    # The full-ranking protocol ranks it (finite scores), as the bench and the recipe's evaluation do.
    from tfrec_attn.evaluation import Evaluator
    from tfrec_attn.evaluation.retrieval import catalogue_scorer

    split = run.recipe.split
    metrics = Evaluator(split, "test").evaluate(catalogue_scorer(model, vocabulary, split), sampled=False)
    assert 0 < metrics["NDCG@10"] <= metrics["HR@10"] <= metrics["HR@50"] <= 1
