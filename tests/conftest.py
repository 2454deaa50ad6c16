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
