"""Item-tower options for text that pays: ZCA-whitened text encodings (fitted once, kept in
the model), id tables started from the principal components of the items' text, and the
frozen text subspace with ids in its complement (AlphaFuse) — values against numpy, config
errors, and exports that reload with TF + tf-text alone."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tfrec_attn.config import ConfigError, load_config
from tfrec_attn.features.projections import principal_subspace, project_rows, zca_whitening

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_zca_whitening_decorrelates_and_stays_closest_to_the_identity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5)
    mean, matrix = zca_whitening(x, epsilon=0.0)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5, atol=1e-5)
    white = (x - mean) @ matrix
    np.testing.assert_allclose(np.cov(white, rowvar=False, bias=True), np.eye(5), atol=1e-3)
    # ZCA's matrix is the symmetric inverse square root of the covariance (not PCA whitening).
    covariance = np.cov(x, rowvar=False, bias=True)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-4)
    np.testing.assert_allclose(matrix @ covariance @ matrix, np.eye(5), atol=1e-3)
    with pytest.raises(ValueError, match=r"needs a \[n >= 2, d\] matrix"):
        zca_whitening(x[:1])


def test_project_rows_keeps_the_top_principal_components():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)) * np.array([5.0, 3.0, 1.0, 0.1, 0.1, 0.1])
    projected = project_rows(x, 2)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(projected), np.abs(centred @ vt[:2].T), rtol=1e-4, atol=1e-4)
    assert projected[:, 0].var() > projected[:, 1].var() > 0.5 * 3.0 ** 2
    assert project_rows(x, 8).shape == (50, 8) and not project_rows(x, 8)[:, 6:].any()


def test_a_whitened_text_tower_projects_the_whitened_encodings_and_rebuilds_from_its_config():
    import tensorflow as tf

    from tfrec_attn.layers.item_tower import TextItemTower

    rng = np.random.default_rng(2)
    features = np.zeros((12, 5), np.float32)
    features[2:] = rng.normal(size=(10, 5)) @ rng.normal(size=(5, 5)) + 3.0  # correlated, off-centre
    tower = TextItemTower(12, 4, 5, kind="text", whitening="zca")
    tower.set_text_features(features)
    mean, matrix = zca_whitening(features[2:])
    np.testing.assert_allclose(tower.text_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(tower.text_whitening.numpy(), matrix, rtol=1e-4, atol=1e-5)
    indices = tf.constant([[2, 3, 11]])
    dense = tower.project.layers[-1]
    expected = ((features[[2, 3, 11]] - mean) @ matrix) @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(tower(indices).numpy()[0], expected, rtol=1e-4, atol=1e-5)
    # New items (no row in the table) go through the same whitening.
    new = rng.normal(size=(2, 5)).astype(np.float32)
    np.testing.assert_allclose(tower.embed_text_features(tf.constant([1, 1]), new).numpy(),
                               ((new - mean) @ matrix) @ dense.kernel.numpy() + dense.bias.numpy(), rtol=1e-4,
                               atol=1e-5)
    rebuilt = TextItemTower.from_config(tower.get_config())
    rebuilt.set_weights(tower.get_weights())
    assert rebuilt.whitening == "zca"
    np.testing.assert_allclose(rebuilt(indices).numpy(), tower(indices).numpy(), rtol=1e-6)
    plain = TextItemTower(12, 4, 5, kind="text")
    plain.set_text_features(features)
    plain.project.set_weights(tower.project.get_weights())
    assert not np.allclose(plain(indices).numpy(), tower(indices).numpy())


def test_the_principal_subspace_is_the_top_components_at_unit_variance():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6)) * np.array([4.0, 2.0, 1.0, 0.5, 0.2, 0.1]) @ np.linalg.qr(
        rng.normal(size=(6, 6)))[0] + 2.0
    mean, basis = principal_subspace(x, 3, epsilon=0.0)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5, atol=1e-5)
    coordinates = (x - mean) @ basis
    np.testing.assert_allclose(np.cov(coordinates, rowvar=False, bias=True), np.eye(3), atol=1e-3)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose(np.abs(coordinates / np.linalg.norm(coordinates, axis=0)),
                               np.abs((x - mean) @ vt[:3].T / np.linalg.norm((x - mean) @ vt[:3].T, axis=0)),
                               rtol=1e-4, atol=1e-5)  # the top three directions, in order
    with pytest.raises(ValueError, match=r"width must be in \[1, 6\]"):
        principal_subspace(x, 7)


def test_a_subspace_hybrid_freezes_the_text_part_and_learns_ids_in_the_rest():
    import tensorflow as tf

    from tfrec_attn.layers.item_tower import TextItemTower

    rng = np.random.default_rng(4)
    features = np.zeros((12, 5), np.float32)
    features[2:] = rng.normal(size=(10, 5)) @ rng.normal(size=(5, 5)) + 1.0
    tower = TextItemTower(12, 6, 5, kind="hybrid", fusion="subspace", subspace_dim=2)
    tower.set_text_features(features)
    mean, basis = principal_subspace(features[2:], 2)
    indices = tf.constant([[2, 3, 11]])
    assert tower.text_gain.numpy() == pytest.approx(0.02)  # starts at the id rows' spread
    tower.text_gain.assign(0.5)
    out = tower(indices).numpy()[0]
    np.testing.assert_allclose(out[:, :2], 0.5 * (features[[2, 3, 11]] - mean) @ basis, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[:, 2:], tower.id_table.numpy()[[2, 3, 11]], rtol=1e-6)
    assert tower.id_table.shape == (12, 4)
    # The ids and one gain train; the text subspace itself is frozen.
    assert sorted(w.name.split("/")[-1] for w in tower.trainable_weights) == ["embeddings:0", "text_gain:0"]
    new = rng.normal(size=(1, 5)).astype(np.float32)  # an unknown item: its text's subspace + the OOV row
    np.testing.assert_allclose(tower.embed_text_features(tf.constant([1]), new).numpy(),
                               np.concatenate([0.5 * (new - mean) @ basis, tower.id_table.numpy()[[1]]], axis=1),
                               rtol=1e-4, atol=1e-5)
    rebuilt = TextItemTower.from_config(tower.get_config())
    rebuilt.set_weights(tower.get_weights())
    np.testing.assert_allclose(rebuilt(indices).numpy(), tower(indices).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"subspace_dim must be in \[1, 5\]"):
        TextItemTower(12, 6, 5, kind="hybrid", fusion="subspace", subspace_dim=6)


@pytest.mark.parametrize("override, message", [
    ("model.item_tower.whitening=zca", r"model.item_tower.whitening='zca' needs a tower that reads text"),
    ("model.item_tower.whitening=pca", r"model.item_tower.whitening='pca' must be one of none, zca"),
    ("model.item_tower.id_init=svd", r"model.item_tower.id_init='svd' must be one of random, pca"),
])
def test_bad_tower_options_name_their_field(override, message):
    with pytest.raises(ConfigError, match=rf"^--set {override}: {message}"):
        load_config(None, [override])
    with pytest.raises(ConfigError, match=r"id_init='pca' needs an id table"):
        load_config(None, ["model.item_tower.type=text", "model.item_tower.id_init=pca"])
    with pytest.raises(ConfigError, match=r"whitening='zca' is fitted once on the frozen encoder's features"):
        load_config(None, ["model.item_tower.type=text", "model.item_tower.whitening=zca",
                           "model.item_tower.trainable_layers=1"])
    with pytest.raises(ConfigError, match=r"fusion='subspace' is fitted once on the frozen encoder's plain "
                                          r"features: needs model.item_tower.whitening=none"):
        load_config(None, ["model.item_tower.type=hybrid", "model.item_tower.fusion=subspace",
                           "model.item_tower.whitening=zca"])
    with pytest.raises(ConfigError, match=r"model.item_tower.subspace_dim=64 must be below model.embedding_dim=64"):
        load_config(None, ["model.item_tower.type=hybrid", "model.item_tower.fusion=subspace",
                           "model.item_tower.subspace_dim=64"])


def _recipe(tiny_bert_dir, *overrides):
    from tfrec_attn.data.synthetic import topic_sequences
    from tfrec_attn.training import RetrievalRecipe

    config = load_config(None, ["model.embedding_dim=8", "model.num_blocks=1", "model.max_len=10", "loss.type=full",
                                f"model.item_tower.encoder={tiny_bert_dir}", *overrides])
    recipe = RetrievalRecipe(config, topic_sequences(num_topics=3, items_per_topic=6, num_users=60))
    recipe.prepare(None)
    return recipe


@pytest.mark.parametrize("tower", ["id", "hybrid"])
def test_pca_init_starts_the_id_rows_from_the_text_principal_components(tiny_bert_dir, tower):
    recipe = _recipe(tiny_bert_dir, f"model.item_tower.type={tower}", "model.item_tower.id_init=pca")
    model = recipe.build_model()
    table = model.item_tower.id_table.numpy()
    assert recipe.text_table is not None and model.item_tower.reads_text == (tower == "hybrid")
    expected = project_rows(recipe.text_table[2:], 8)
    # The text's principal components, rescaled (one positive factor) to the random initializer's spread.
    scale = float((table[2:] * expected).sum() / (expected ** 2).sum())
    assert scale > 0
    np.testing.assert_allclose(table[2:], expected * scale, rtol=1e-4, atol=1e-6)
    assert 0.005 < table[2:].std() < 0.05  # TruncatedNormal(0.02)'s spread, not the encodings'
    random = _recipe(tiny_bert_dir, f"model.item_tower.type={tower}").build_model().item_tower.id_table.numpy()
    assert not np.allclose(random[2:], table[2:])


@pytest.mark.parametrize("options", [("model.item_tower.whitening=zca", "model.item_tower.id_init=pca",
                                      "model.item_tower.projection=mlp"), ("model.item_tower.fusion=subspace",)])
def test_a_hybrid_export_reloads_with_tensorflow_text_alone_with_the_same_scores(tiny_bert_dir, tmp_path, options):
    import tensorflow as tf

    from tfrec_attn.export import export_retrieval

    recipe = _recipe(tiny_bert_dir, "model.item_tower.type=hybrid", *options)
    model = recipe.build_model()
    path = export_retrieval(model, recipe.vocabulary, str(tmp_path), k=5)
    known = list(recipe.vocabulary.item_ids[:3])
    expected = model.score_items(tf.constant([recipe.vocabulary.model_indices(known)]))[0].numpy()
    script = ("import sys, json, numpy as np, tensorflow as tf, tensorflow_text\n"
              f"m = tf.saved_model.load({path!r})\n"
              f"out = m.signatures['serving_default'](history=tf.constant([{known!r}]))\n"
              "print(json.dumps({'ids': [i.decode() for i in out['item_ids'].numpy()[0]],"
              " 'scores': out['scores'].numpy()[0].tolist()}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    served = json.loads(proc.stdout.strip().splitlines()[-1])
    masked = expected.copy()
    masked[recipe.vocabulary.model_indices(known) - 2] = -np.inf  # the export excludes the history
    top = np.argsort(-masked)[:5]
    assert served["ids"] == [recipe.vocabulary.item_ids[i] for i in top]
    np.testing.assert_allclose(served["scores"], masked[top], rtol=1e-5, atol=1e-5)
