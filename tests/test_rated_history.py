"""A rating-aware history (``model.user_tower.num_ratings``): each event's rating is an input
of the user tower, in training, in the evaluation and in the export's signatures."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfrec_attn.config import ConfigError, load_config
from tfrec_attn.data.sequences import sequence_dataset
from tfrec_attn.data.synthetic import rated_successor_sequences
from tfrec_attn.evaluation.saved_model import evaluate_saved_model, known_items
from tfrec_attn.export import export_retrieval
from tfrec_attn.features.vocab import ItemVocabulary
from tfrec_attn.layers.user_tower import UserTower
from tfrec_attn.training import train

CONFIG = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "ml100k_retrieval.yaml")
FAST = [
    "model.embedding_dim=32", "model.num_blocks=1", "model.max_len=20", "model.dropout=0.1",
    "loss.type=full", "train.batch_size=32", "train.learning_rate=0.005", "train.epochs=15",
    "train.patience=100", "train.refit_with_validation=false",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same model trained on data whose next item depends on the last rating: reading
    the items alone (num_ratings=0) and reading their ratings too (num_ratings=5)."""
    data = rated_successor_sequences()
    return {levels: train(load_config(CONFIG, FAST + [f"model.user_tower.num_ratings={levels}"]), data,
                          str(tmp_path_factory.mktemp(f"rated{levels}")), verbose=0)
            for levels in (0, 5)}


def test_the_ratings_tell_what_the_items_alone_cannot(runs):
    items_only, rated = runs[0].metrics["test"], runs[5].metrics["test"]
    # Items alone can only split the bet between i + 1 (after a 5) and i + 3 (after a 1).
    assert rated["NDCG@10"] >= 0.95, rated
    assert items_only["NDCG@10"] <= 0.92, items_only
    assert rated["MRR"] > items_only["MRR"] + 0.1


def test_a_tower_without_ratings_is_todays_and_unknown_ratings_add_nothing():
    tf.keras.utils.set_random_seed(3)
    plain = UserTower(16, 10, num_blocks=1, dropout=0.0, attention_dropout=0.0)
    rated = UserTower(16, 10, num_blocks=1, dropout=0.0, attention_dropout=0.0, num_ratings=5)
    assert [w.name for w in plain.weights] == [w.name for w in rated.weights if "feedback" not in w.name]
    for target, source in zip([w for w in rated.weights if "feedback" not in w.name], plain.weights):
        target.assign(source)
    embeddings = tf.random.normal([2, 6, 16])
    mask = tf.constant([[True] * 6, [True] * 4 + [False] * 2])
    ratings = tf.constant([[5, 1, 3, 0, 2, 4], [1, 2, 3, 4, 5, 5]], tf.int64)
    base = plain({"embeddings": embeddings, "padding_mask": mask})["sequence"]
    unknown = rated({"embeddings": embeddings, "padding_mask": mask, "ratings": tf.zeros([2, 6], tf.int64)})
    np.testing.assert_allclose(unknown["sequence"], base, atol=1e-6)
    read = rated({"embeddings": embeddings, "padding_mask": mask, "ratings": ratings})["sequence"]
    assert np.abs(read[0] - base[0]).max() > 1e-3  # a known rating moves the outputs
    # A rating at a padding position changes nothing (row 1's last two positions are padding).
    other = tf.tensor_scatter_nd_update(ratings, [[1, 4], [1, 5]], tf.constant([1, 1], tf.int64))
    np.testing.assert_allclose(rated({"embeddings": embeddings, "padding_mask": mask, "ratings": other})["sequence"],
                               read, atol=1e-6)
    assert UserTower.from_config(rated.get_config()).num_ratings == 5


def test_training_examples_carry_each_events_rating_in_order():
    vocabulary = ItemVocabulary([f"i{i}" for i in range(8)])
    sequences = [["i0", "i1", "i2", "i3"], ["i4", "i5", "i6"]]
    times = [[1, 1, 1, 2], [5, 6, 7]]  # a tie of three events, re-ordered every epoch
    ratings = [[1.0, 2.0, 3.0, np.nan], [5.0, 4.0, 3.0]]
    rating_of = {"i0": 1.0, "i1": 2.0, "i2": 3.0, "i3": 0.0, "i4": 5.0, "i5": 4.0, "i6": 3.0}
    to_id = {vocabulary.model_indices([i])[0]: i for i in rating_of}
    options = dict(max_len=10, batch_size=2, shuffle=False, bucket_by_length=False, shuffle_ties=True)
    data = sequence_dataset(sequences, vocabulary, timestamps=times, ratings=ratings, **options)
    for _ in range(3):
        for features, _labels in data:
            for row_ids, row_ratings in zip(features["history"].numpy(), features["history_ratings"].numpy()):
                for index, value in zip(row_ids, row_ratings):
                    expected = rating_of[to_id[index]] if index in to_id else 0.0  # padding: 0
                    assert value == expected
    hidden = sequence_dataset(sequences, vocabulary, timestamps=times, ratings=ratings, rating_dropout=0.999,
                              **options)
    assert all(not features["history_ratings"].numpy().any() for features, _ in hidden)


def test_the_export_reads_the_ratings_in_a_fresh_process_as_the_model_does(runs, tmp_path):
    run = runs[5]
    path = export_retrieval(run.model, run.vocabulary, str(tmp_path), k=10)
    exported = evaluate_saved_model(path, run.split, "test")
    for name in ("HR@10", "NDCG@10"):
        assert exported[name] == pytest.approx(run.metrics["test"][name], abs=0.002)
    history = [["i3", "i4", ""], ["i3", "i4", "unknown-id"]]
    ratings = [[5.0, 5.0, 0.0], [5.0, 1.0, 3.0]]
    script = (
        "import json, sys, tensorflow as tf\n"
        "f = tf.saved_model.load(sys.argv[1]).signatures\n"
        "h, r = tf.constant(json.loads(sys.argv[2])), tf.constant(json.loads(sys.argv[3]))\n"
        "out = {'items': f['serving_default'](history=h, history_ratings=r)['item_ids'].numpy().astype(str).tolist(),\n"
        "       'user': f['user_embedding'](history=h, history_ratings=r)['embedding'].numpy().tolist()}\n"
        "try:\n"
        "    f['serving_default'](history=h, history_ratings=r[:, :2])\n"
        "except tf.errors.InvalidArgumentError as e:\n"
        "    out['refused'] = 'history_ratings: shape must equal the shape of history' in e.message\n"
        "print(json.dumps(out))\n")
    answer = subprocess.run([sys.executable, "-c", script, path, json.dumps(history), json.dumps(ratings)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert answer.returncode == 0, answer.stderr[-2000:]
    served = json.loads(answer.stdout.strip().splitlines()[-1])
    # The rule read through the last rating: after i4 rated 5 comes i5, after i4 rated 1 comes i7.
    assert [row[0] for row in served["items"]] == ["i5", "i7"]
    ids = run.vocabulary.lookup_layer()(tf.constant(history))
    np.testing.assert_allclose(served["user"], run.model(ids, ratings=tf.constant(ratings)).numpy(), atol=1e-5)
    assert served["refused"]
    assert known_items(tf.saved_model.load(path), ["i3", "nope"]).tolist() == [True, False]


def test_the_client_and_the_cli_send_the_ratings_to_a_rating_aware_retrieval_model(runs, tmp_path, capsys):
    from tfrec_attn.app.cli import main
    from tfrec_attn.serving.client import RecommenderClient
    from tfrec_attn.serving.config import model_server_config
    from tfrec_attn.serving.server import ModelServer

    export_retrieval(runs[5].model, runs[5].vocabulary, str(tmp_path), k=10, model_name="rated")
    export_retrieval(runs[0].model, runs[0].vocabulary, str(tmp_path), k=10, model_name="plain")
    config = model_server_config([(name, str(tmp_path / name)) for name in ("rated", "plain")])
    server = ModelServer(config, port=0, host="127.0.0.1", poll_wait_seconds=0).start()
    target = f"127.0.0.1:{server.port}"
    try:
        with RecommenderClient(target, model_name="rated") as client:
            assert client.recommend(["i7", "i8"], ratings=[5, 5])[0][0] == "i9"
            assert client.recommend(["i7", "i8"], ratings=[5, 1])[0][0] == "i11"
            assert [r[0][0] for r in client.recommend([["i7", "i8"], ["i7"]], ratings=[[5, 1], [5]])] == ["i11", "i8"]
            with pytest.raises(ValueError, match="row 0: 1 ratings/timestamps for 2 history items"):
                client.recommend(["i7", "i8"], ratings=[5])
            assert len(client.recommend(["i7", "i8"])) == 10  # no ratings: all unknown, still served
            assert [item for item, score in client.rank(["i7"], ["i8", "nope"]) if np.isfinite(score)] == ["i8"]
        with RecommenderClient(target, model_name="plain") as client, \
                pytest.raises(ValueError, match="model 'plain' reads the history's items alone"):
            client.recommend(["i7", "i8"], ratings=[5, 1])
        query = ["query", "--server", target, "--model_name", "rated", "--history", "i7,i8", "-k", "1"]
        assert main([*query, "--ratings", "5,1"]) == 0
        out, err = capsys.readouterr()
        assert out.split()[:2] == ["1", "i11"] and not err
        assert main([*query, "--ratings", "5"]) == 2
        assert capsys.readouterr().err.strip() == "error: --ratings: 1 values for 2 --history items"
        assert main([*query[:4], "plain", *query[5:], "--ratings", "5,1"]) == 2
        assert "--ratings: model 'plain' reads the history's items alone" in capsys.readouterr().err
    finally:
        server.stop()


def test_bad_rating_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"model.user_tower.num_ratings.*must be >= 0"):
        load_config(CONFIG, ["model.user_tower.num_ratings=-1"])
    with pytest.raises(ConfigError, match=r"model.user_tower.rating_dropout.*must be in \[0, 1\)"):
        load_config(CONFIG, ["model.user_tower.rating_dropout=1.0"])
    with pytest.raises(ConfigError, match=r"model.user_tower.num_ratings.*data.sequence_files"):
        load_config(CONFIG, ["model.user_tower.num_ratings=5", "data.sequence_files=/tmp/somewhere"])


def test_add_items_keeps_the_ratings_input_of_a_rating_aware_text_export(tiny_bert_dir, tmp_path):
    from conftest import topic_config

    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.dataset import Item
    from tfrec_attn.data.synthetic import topic_sequences
    from tfrec_attn.export.catalogue import add_items
    from tfrec_attn.training.retrieval import RetrievalRecipe

    data = topic_sequences()
    recipe = RetrievalRecipe(topic_config("text", tiny_bert_dir, ["model.user_tower.num_ratings=5"]), data,
                             leave_one_out(data.interactions))
    recipe.prepare(None)
    model = recipe.build_model()  # untrained: what is checked is that every signature reads the ratings
    export_retrieval(model, recipe.vocabulary, str(tmp_path), k=10)
    new = {"g-new": Item("g-new", "green mouse")}
    extended = tf.saved_model.load(add_items(str(tmp_path), new))
    history = tf.constant([list(recipe.vocabulary.item_ids[:3])])
    signatures = extended.signatures
    user = {r: signatures["user_embedding"](history=history, history_ratings=tf.constant([[r, r, r]]))["embedding"]
            for r in (1.0, 5.0)}
    assert np.abs(user[1.0] - user[5.0]).max() > 1e-4  # the ratings reach the user tower
    vector = signatures["embed_items"](item_ids=tf.constant(["g-new"]), item_texts=tf.constant(["green mouse"]))
    for r in (1.0, 5.0):
        scores = signatures["rank"](history=history, candidates=tf.constant([["g-new"]]),
                                    history_ratings=tf.constant([[r, r, r]]))["scores"].numpy()[0, 0]
        assert scores == pytest.approx(float(tf.reduce_sum(user[r][0] * vector["embeddings"][0])), abs=1e-4)
        served = signatures["serving_default"](history=history, history_ratings=tf.constant([[r, r, r]]))
        assert served["item_ids"].shape == (1, 10)
