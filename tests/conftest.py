import os

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

    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.synthetic import planted_sequences
    from tfrec_attn.features.vocab import ItemVocabulary
    from tfrec_attn.training.config import load_config
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
