import os
from typing import NamedTuple

import pytest

import tfrec_attn  # noqa: F401  (Keras 2 for TFRS, before anything imports TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CANDIDATES = [
    os.environ.get("TFREC_ATTN_TEST_DATA", ""),
    os.path.join(ROOT, "..", "shared", "data", "ml-100k"),
    "/work/shared/data/ml-100k",
]
ML100K = next((c for c in _CANDIDATES if c and os.path.isfile(os.path.join(c, "u.data"))), _CANDIDATES[1])


@pytest.fixture(scope="session")
def ml100k_dir():
    if not os.path.isfile(os.path.join(ML100K, "u.data")):
        pytest.skip(f"MovieLens 100K not found at {ML100K} (set TFREC_ATTN_TEST_DATA)")
    return ML100K


@pytest.fixture(scope="session")
def ml100k(ml100k_dir):
    from tfrec_attn.data import read_movielens

    return read_movielens(ml100k_dir)


@pytest.fixture(scope="session")
def ml100k_split(ml100k):
    from tfrec_attn.data import leave_one_out

    return leave_one_out(ml100k.interactions)


@pytest.fixture(scope="session")
def tiny_model():
    """An untrained (seeded) retrieval model over a 40-item synthetic catalogue."""
    import tensorflow as tf

    from tfrec_attn.config import load_config
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.synthetic import planted_sequences
    from tfrec_attn.features.vocab import ItemVocabulary
    from tfrec_attn.training.retrieval import build_model

    tf.keras.utils.set_random_seed(0)
    config = load_config(os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml"),
                         ["model.embedding_dim=16", "model.num_blocks=1", "model.max_len=20"])
    split = leave_one_out(planted_sequences(num_items=40, num_users=50).interactions)
    vocabulary = ItemVocabulary(split.item_vocab)
    return build_model(config, vocabulary), vocabulary


@pytest.fixture(scope="session")
def tiny_export(tiny_model, tmp_path_factory):
    """A TF Serving model base path holding version 1 of the tiny model (k=10)."""
    from tfrec_attn.export import export_retrieval

    base = tmp_path_factory.mktemp("models")
    model, vocabulary = tiny_model
    path = export_retrieval(model, vocabulary, str(base), model_name="retrieval", k=10)
    return str(base / "retrieval"), path


class TinyRanking(NamedTuple):
    model: object  # the ranker
    encoder: object  # its UserFeatureEncoder
    base: str  # the model base path of its exports (and of tiny_recommend's)
    ranking: str  # BASE/ranking/1


@pytest.fixture(scope="session")
def tiny_ranking(tiny_model, tmp_path_factory):
    """A seeded, untrained DIN ranker over the tiny catalogue (user features, ratings, times;
    max_len 6) whose attention scorer is re-drawn so that the weights take both signs, with a
    blend weight of 0.5 for the tiny retrieval model's scores, and its ranking export."""
    import numpy as np
    import tensorflow as tf

    from tfrec_attn.config import load_config
    from tfrec_attn.export.ranking import export_ranking
    from tfrec_attn.features.ranking import UserFeatureEncoder
    from tfrec_attn.layers.target_attention import DinAttention
    from tfrec_attn.models.ranking import build_ranking_model

    _, vocabulary = tiny_model
    config = load_config(None, ["recipe=ranking", "model.embedding_dim=16", "model.max_len=6",
                                "model.attention=din"])
    encoder = UserFeatureEncoder(["F", "M"], ["other", "writer"])
    tf.keras.utils.set_random_seed(config.seed)
    model = build_ranking_model(config.model, config.loss, vocabulary.num_indices, user_feature_sizes=encoder.sizes)
    (din,) = [layer for layer in model.network.submodules if isinstance(layer, DinAttention)]
    rng = np.random.default_rng(0)
    din.score.kernel.assign(rng.normal(0, 1.0, din.score.kernel.shape).astype(np.float32))
    din.score.bias.assign(np.zeros(din.score.bias.shape, np.float32))
    model.retrieval_weight.assign(0.5)
    base = tmp_path_factory.mktemp("tiny_ranking")
    ranking = export_ranking(model, vocabulary, encoder, str(base), max_len=6, num_ratings=5)
    return TinyRanking(model, encoder, str(base), ranking)


@pytest.fixture(scope="session")
def tiny_recommend(tiny_model, tiny_ranking):
    """BASE/recommend/1 next to the tiny ranking export: the tiny retrieval model's top 12,
    ranked by the tiny ranker; k=5, 3 explanations each."""
    from tfrec_attn.export.ranking import export_recommend

    retrieval, vocabulary = tiny_model
    return export_recommend(retrieval, vocabulary, tiny_ranking.model, vocabulary, tiny_ranking.encoder,
                            tiny_ranking.base, k=5, candidates=12, because=3, max_len=6, num_ratings=5)


TINY_BERT_WORDS = [
    "the", "a", "of", "and", "genres", "comedy", "drama", "action", "romance", "story", "star", "wars",
    "red", "green", "blue", "yellow", "purple", "orange", "black", "white",
    "cat", "dog", "horse", "bird", "fish", "lion", "tiger", "bear", "wolf", "fox", "mouse", "snake",
]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A randomly initialised 2-layer BERT (hidden 32) in a Hugging Face model directory:
    config.json, vocab.txt (special tokens, some words, single characters and ##pieces,
    so any ASCII text tokenizes), tokenizer_config.json and tf_model.h5."""
    import json
    import string

    import tensorflow as tf

    from tfrec_attn.text.pretrained import quiet_transformers

    quiet_transformers()
    from transformers import BertConfig, TFBertModel

    path = tmp_path_factory.mktemp("tiny_bert")
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_BERT_WORDS + chars + ["##" + c for c in chars]
    vocab = list(dict.fromkeys(tokens))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    tf.keras.utils.set_random_seed(0)
    model = TFBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(str(path))
    return str(path)


def topic_config(tower, bert_dir, extra=()):
    """The retrieval config the topic-catalogue tests train: ``tower`` over the tiny BERT."""
    from tfrec_attn.config import load_config

    return load_config(os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml"), [
        f"model.item_tower.type={tower}", f"model.item_tower.encoder={bert_dir}", "model.embedding_dim=16",
        "model.num_blocks=1", "model.max_len=20", "train.epochs=30", "train.batch_size=64", "train.patience=50",
        "train.refit_with_validation=false", "loss.type=full", "seed=3", *extra])


@pytest.fixture(scope="session")
def topic_runs(tiny_bert_dir, tmp_path_factory):
    """Text and id towers trained on the cold-start split of the topic catalogue (whose texts
    carry the successor pattern): (data, cold split, {"text": TrainResult, "id": ...})."""
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.synthetic import topic_sequences
    from tfrec_attn.evaluation import cold_start_split
    from tfrec_attn.training import train

    data = topic_sequences()
    cold = cold_start_split(leave_one_out(data.interactions), fraction=0.04)
    runs = {}
    for tower in ("text", "id"):
        out = str(tmp_path_factory.mktemp(f"topics_{tower}"))
        runs[tower] = train(topic_config(tower, tiny_bert_dir), data, out, verbose=0,
                            split=cold.split, evaluate_test=False)
        runs[tower].run_dir = out
    return data, cold, runs
