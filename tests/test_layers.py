import numpy as np
import pytest
import tensorflow as tf

from tfrec_attn.layers import (
    ExcludingBruteForce,
    IdItemTower,
    PositionalEmbedding,
    TransformerBlock,
    UserTower,
    attention_mask,
)
from tfrec_attn.layers.user_tower import last_position
from tfrec_attn.models import compact_history


def random_inputs(batch=3, length=7, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, length, dim)), tf.float32)
    lengths = [length, 4, 1][:batch]
    mask = tf.constant([[t < n for t in range(length)] for n in lengths])
    return x, mask


def test_attention_mask_is_causal_and_ignores_padding():
    mask = attention_mask(tf.constant([[True, True, False]])).numpy()[0]
    assert mask.tolist() == [[True, False, False], [True, True, False], [True, True, False]]


@pytest.mark.parametrize("norm_first", [True, False])
def test_causal_output_ignores_the_future_and_padding(norm_first):
    tower = UserTower(16, max_len=10, num_blocks=2, num_heads=2, dropout=0.0, attention_dropout=0.0,
                      norm_first=norm_first)
    x, _ = random_inputs()
    full = tf.ones((3, 7), tf.bool)
    base = tower({"embeddings": x, "padding_mask": full})["sequence"].numpy()
    # Changing items after position t must not change outputs at <= t ... but the recency
    # positions count from the end, so compare prefixes: the output at t of the sequence
    # cut after t equals the output at t of the full sequence with the suffix masked away.
    for t in range(7):
        prefix_mask = tf.constant([[s <= t for s in range(7)]] * 3)
        changed = x.numpy().copy()
        changed[:, t + 1:] = np.random.default_rng(t).normal(size=changed[:, t + 1:].shape)
        a = tower({"embeddings": x, "padding_mask": prefix_mask})["sequence"].numpy()[:, : t + 1]
        b = tower({"embeddings": tf.constant(changed), "padding_mask": prefix_mask})["sequence"].numpy()[:, : t + 1]
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Without positions, the output at t is a function of items <= t only, even with all valid.
    plain = UserTower(16, max_len=10, num_blocks=2, dropout=0.0, attention_dropout=0.0,
                      norm_first=norm_first, positional="none")
    ref = plain({"embeddings": x, "padding_mask": full})["sequence"].numpy()
    changed = x.numpy().copy()
    changed[:, 4:] = np.random.default_rng(9).normal(size=changed[:, 4:].shape)
    out = plain({"embeddings": tf.constant(changed), "padding_mask": full})["sequence"].numpy()
    np.testing.assert_allclose(out[:, :4], ref[:, :4], atol=1e-5)
    assert np.abs(out[:, 4:] - ref[:, 4:]).max() > 1e-3  # and the future does change later outputs
    assert base.shape == (3, 7, 16)


def test_padding_values_do_not_leak():
    tower = UserTower(16, max_len=10, num_blocks=2, num_heads=2, dropout=0.0, attention_dropout=0.0)
    x, mask = random_inputs()
    out = tower({"embeddings": x, "padding_mask": mask})["sequence"].numpy()
    noisy = x.numpy().copy()
    noisy[~mask.numpy()] = 100.0  # garbage in padded slots
    out2 = tower({"embeddings": tf.constant(noisy), "padding_mask": mask})["sequence"].numpy()
    np.testing.assert_allclose(out, out2, atol=1e-5)
    assert np.all(out[~mask.numpy()] == 0.0)
    # Wider padding changes nothing either.
    wide = tf.concat([x, tf.zeros((3, 5, 16))], axis=1)
    wide_mask = tf.concat([mask, tf.zeros((3, 5), tf.bool)], axis=1)
    np.testing.assert_allclose(tower({"embeddings": wide, "padding_mask": wide_mask})["sequence"].numpy()[:, :7], out, atol=1e-5)


def test_recency_positions_count_from_the_end():
    layer = PositionalEmbedding(5, 4)
    mask = tf.constant([[True, True, True, False], [True, False, False, False]])
    out = layer(mask).numpy()
    table = layer.embedding.embeddings.numpy()
    np.testing.assert_allclose(out[0, 2], table[0])  # most recent of row 0
    np.testing.assert_allclose(out[0, 0], table[2])
    np.testing.assert_allclose(out[1, 0], table[0])
    assert np.all(out[0, 3] == 0)


def roundtrip(layer, *args, **kwargs):
    layer(*args, **kwargs)  # build
    clone = layer.__class__.from_config(layer.get_config())
    clone(*args, **kwargs)
    clone.set_weights(layer.get_weights())
    return clone


@pytest.mark.parametrize("norm_first", [True, False])
def test_serialization_round_trips(norm_first):
    x, mask = random_inputs()
    block = TransformerBlock(16, 2, 32, 0.1, 0.1, norm_first=norm_first)
    np.testing.assert_allclose(roundtrip(block, x, mask)(x, mask), block(x, mask), atol=1e-6)
    tower = UserTower(16, 10, num_blocks=2, num_heads=4, ffn_dim=24, dropout=0.3,
                      attention_dropout=0.1, norm_first=norm_first)
    inputs = {"embeddings": x, "padding_mask": mask}
    clone = roundtrip(tower, inputs)
    np.testing.assert_allclose(clone(inputs)["sequence"], tower(inputs)["sequence"], atol=1e-6)
    np.testing.assert_allclose(clone(inputs)["attention"], tower(inputs)["attention"], atol=1e-6)
    assert tower.get_config()["num_heads"] == 4 and tower.get_config()["ffn_dim"] == 24
    pos = PositionalEmbedding(10, 16)
    np.testing.assert_allclose(roundtrip(pos, mask)(mask), pos(mask))
    items = IdItemTower(12, 16)
    ids = tf.constant([[2, 3, 0]])
    np.testing.assert_allclose(roundtrip(items, ids)(ids), items(ids))
    # Registered under the package name, so Keras can rebuild them from JSON.
    serialized = tf.keras.utils.serialize_keras_object(tower)
    assert serialized["registered_name"] == "tfrec_attn>UserTower"
    rebuilt = tf.keras.utils.deserialize_keras_object(serialized)
    assert rebuilt.get_config() == tower.get_config()


def test_last_position_and_compaction():
    seq = tf.constant(np.arange(24, dtype=np.float32).reshape(2, 4, 3))
    mask = tf.constant([[True, True, False, False], [False, False, False, False]])
    np.testing.assert_allclose(last_position(seq, mask).numpy(), [[3, 4, 5], [0, 0, 0]])
    ids = tf.constant([[5, 0, 1, 6, 7, 8], [0, 0, 0, 0, 0, 0], [9, 0, 0, 0, 0, 0]], tf.int64)
    assert compact_history(ids, 3).numpy().tolist() == [[6, 7, 8], [0, 0, 0], [9, 0, 0]]
    assert compact_history(tf.zeros((2, 4), tf.int64), 3).numpy().tolist() == [[0], [0]]


def test_brute_force_excludes_history_exactly():
    rng = np.random.default_rng(0)
    candidates = tf.constant(rng.normal(size=(20, 8)), tf.float32)
    ids = tf.constant([f"item{i}" for i in range(20)])
    queries = tf.constant(rng.normal(size=(4, 8)), tf.float32)
    index = ExcludingBruteForce(k=5).index(candidates, ids)
    scores = queries.numpy() @ candidates.numpy().T
    exclude = np.array([[int(np.argmax(scores[r])), -1, 3] for r in range(4)])
    top_scores, top_ids = index.query(queries, tf.constant(exclude), k=5)
    for r in range(4):
        expected = [i for i in np.argsort(-scores[r]) if i not in exclude[r]][:5]
        assert [x.decode() for x in top_ids.numpy()[r]] == [f"item{i}" for i in expected]
        np.testing.assert_allclose(top_scores.numpy()[r], scores[r][expected], rtol=1e-5)
    # k larger than what remains: clipped to the catalogue, excluded rows sink to -inf.
    s, i = index.query(queries[:1], tf.constant([list(range(18))]), k=50)
    assert i.shape == (1, 20) and set(i.numpy()[0][:2]) == {b"item18", b"item19"}
    assert np.isneginf(s.numpy()[0][2:]).all()
