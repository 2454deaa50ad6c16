import logging
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfrec_attn.config import load_config
from tfrec_attn.data.synthetic import planted_sequences
from tfrec_attn.evaluation import Evaluator
from tfrec_attn.evaluation.saved_model import evaluate_saved_model
from tfrec_attn.export import export_retrieval
from tfrec_attn.tasks import Candidates, FullSoftmaxTask, InBatchSoftmaxTask, SampledSoftmaxTask
from tfrec_attn.training import RunDirectory, train

CONFIG = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "ml100k_retrieval.yaml")
FAST = [
    "model.embedding_dim=32", "model.num_blocks=1", "model.max_len=20", "model.dropout=0.1",
    "loss.type=full", "train.batch_size=32", "train.learning_rate=0.005", "train.epochs=15",
    "train.patience=100", "train.refit_with_validation=false",
]


def log_softmax_np(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _candidates(table):
    table = tf.constant(table, tf.float32)
    return Candidates(embed=lambda ids: tf.gather(table, ids), table=lambda: table)


def test_full_softmax_matches_numpy_and_ignores_pad_oov_columns():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 4)).astype(np.float32)
    c = rng.normal(size=(9, 4)).astype(np.float32)
    labels = np.array([2, 3, 8, 5, 2])
    logits = (q @ c.T)[:, 2:] / 0.5  # pad (0) and OOV (1) columns are not classes
    expected = -log_softmax_np(logits)[np.arange(5), labels - 2].mean()
    got = FullSoftmaxTask(temperature=0.5)(tf.constant(q), tf.constant(labels), _candidates(c))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    eps = 0.1
    target = np.full((5, 7), eps / 7)
    target[np.arange(5), labels - 2] += 1 - eps
    expected_ls = -(target * log_softmax_np(q @ c.T[:, 2:])).sum(-1).mean()
    got_ls = FullSoftmaxTask(label_smoothing=eps)(tf.constant(q), tf.constant(labels), _candidates(c))
    assert float(got_ls) == pytest.approx(expected_ls, rel=1e-5)
    weights = np.array([1.0, 0.0, 2.0, 1.0, 0.0])  # a weighted mean: padding rows weigh 0
    per_row = -log_softmax_np(logits)[np.arange(5), labels - 2]
    got_w = FullSoftmaxTask(temperature=0.5)(tf.constant(q), tf.constant(labels), _candidates(c),
                                             weights=tf.constant(weights))
    assert float(got_w) == pytest.approx((per_row * weights).sum() / weights.sum(), rel=1e-5)


def test_sampled_softmax_is_exact_when_negatives_cover_the_catalogue():
    rng = np.random.default_rng(1)
    q = tf.constant(rng.normal(size=(6, 4)), tf.float32)
    c = _candidates(rng.normal(size=(12, 4)))
    labels = tf.constant([2, 5, 11, 3, 3, 7])
    exact = SampledSoftmaxTask(12, num_negatives=10)
    exact.set_item_counts(np.arange(12.0))
    assert exact.exact
    assert float(exact(q, labels, c)) == pytest.approx(float(FullSoftmaxTask()(q, labels, c)), rel=1e-6)
    smoothed = SampledSoftmaxTask(12, num_negatives=10, label_smoothing=0.2)
    assert float(smoothed(q, labels, c)) == pytest.approx(
        float(FullSoftmaxTask(label_smoothing=0.2)(q, labels, c)), rel=1e-6)
    assert float(smoothed(q, labels, c)) != pytest.approx(float(exact(q, labels, c)), rel=1e-3)


def test_sampled_softmax_matches_the_logq_corrected_formula_and_shares_negatives_per_step():
    rng = np.random.default_rng(2)
    table = rng.normal(size=(40, 4)).astype(np.float32)
    q = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([2, 5, 11, 3, 3, 7])
    counts = rng.integers(0, 50, size=40).astype(np.float64)
    task = SampledSoftmaxTask(40, num_negatives=5, alpha=0.75, temperature=0.5, seed=3)
    task.set_item_counts(counts)
    got = float(task(tf.constant(q), tf.constant(labels), _candidates(table), step=7))
    # The same draw as the task's: a stateless sampler keyed on (seed, step).
    log_p = task.log_probability.numpy()
    sampled = tf.random.stateless_categorical(log_p[None], 5, seed=[3, 7], dtype=tf.int64)[0].numpy()
    p = (counts + 1.0) ** 0.75
    p[:2] = 0
    p /= p.sum()
    log_kq = np.log(5 * p, where=p > 0, out=np.full_like(p, -1e9))
    true = (q * table[labels]).sum(1) / 0.5 - log_kq[labels]
    neg = (q @ table[sampled].T) / 0.5 - log_kq[sampled][None]
    neg = np.where(labels[:, None] == sampled[None], -1e9, neg)  # accidental hits removed
    logits = np.concatenate([true[:, None], neg], 1)
    expected = (np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1) - true).mean()
    assert got == pytest.approx(expected, rel=1e-4)
    # Label smoothing: the mass eps goes uniformly to the sampled negatives (hits excluded).
    smoothed = SampledSoftmaxTask(40, num_negatives=5, alpha=0.75, temperature=0.5, seed=3, label_smoothing=0.1)
    smoothed.set_item_counts(counts)
    log_z = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    real = labels[:, None] != sampled[None]
    uniform = ((log_z[:, None] - neg) * real).sum(1) / real.sum(1)
    expected_ls = (0.9 * (log_z - true) + 0.1 * uniform).mean()
    got_ls = float(smoothed(tf.constant(q), tf.constant(labels), _candidates(table), step=7))
    assert got_ls == pytest.approx(expected_ls, rel=1e-4)
    # Every replica (and a rerun) at the same step draws the same negatives; another step others.
    again = float(task(tf.constant(q), tf.constant(labels), _candidates(table), step=7))
    other = float(task(tf.constant(q), tf.constant(labels), _candidates(table), step=8))
    assert again == got and other != got


def _weighted_log_z(logits, negatives, beta):
    """REMI's partition function: negatives weighted by M * softmax(beta * logit) (numpy)."""
    scaled = np.where(negatives, beta * logits, -np.inf)
    weights = np.exp(scaled - scaled.max(1, keepdims=True))
    weights = negatives.sum(1, keepdims=True) * weights / weights.sum(1, keepdims=True)
    terms = np.where(negatives, weights * np.exp(logits), np.where(np.isfinite(logits), np.exp(logits), 0.0))
    return np.log(terms.sum(1))


def test_hard_negative_weights_match_remis_formula_and_beta_zero_is_the_plain_softmax():
    rng = np.random.default_rng(4)
    q = rng.normal(size=(5, 4)).astype(np.float32)
    c = rng.normal(size=(9, 4)).astype(np.float32)
    labels = np.array([2, 3, 8, 5, 2])
    beta = 2.0
    # Full softmax: every real item but the label is a negative.
    logits = (q @ c.T)[:, 2:] / 0.5
    rows = np.arange(5)
    negatives = np.ones_like(logits, bool)
    negatives[rows, labels - 2] = False
    log_z = _weighted_log_z(logits, negatives, beta)
    expected = (log_z - logits[rows, labels - 2]).mean()
    task = FullSoftmaxTask(temperature=0.5, hard_negative_beta=beta)
    assert float(task(tf.constant(q), tf.constant(labels), _candidates(c))) == pytest.approx(expected, rel=1e-5)
    # The hardest negatives weigh more: the weighted loss is above the plain one.
    plain = float(FullSoftmaxTask(temperature=0.5)(tf.constant(q), tf.constant(labels), _candidates(c)))
    assert expected > plain + 1e-3
    eps = 0.2
    target = np.full((5, 7), eps / 7)
    target[rows, labels - 2] += 1 - eps
    expected_ls = (target * (log_z[:, None] - logits)).sum(1).mean()
    smoothed = FullSoftmaxTask(temperature=0.5, label_smoothing=eps, hard_negative_beta=beta)
    assert float(smoothed(tf.constant(q), tf.constant(labels), _candidates(c))) == pytest.approx(expected_ls, rel=1e-5)
    assert float(FullSoftmaxTask(temperature=0.5, hard_negative_beta=0.0)(
        tf.constant(q), tf.constant(labels), _candidates(c))) == plain
    # The exact sampled softmax is the full one; the sampled one weighs its step's negatives.
    exact = SampledSoftmaxTask(9, num_negatives=10, temperature=0.5, hard_negative_beta=beta)
    assert float(exact(tf.constant(q), tf.constant(labels), _candidates(c))) == pytest.approx(expected, rel=1e-5)
    table = rng.normal(size=(40, 4)).astype(np.float32)
    counts = rng.integers(0, 50, size=40).astype(np.float64)
    task = SampledSoftmaxTask(40, num_negatives=5, temperature=0.5, seed=3, hard_negative_beta=beta)
    task.set_item_counts(counts)
    got = float(task(tf.constant(q), tf.constant(labels), _candidates(table), step=7))
    sampled = tf.random.stateless_categorical(task.log_probability.numpy()[None], 5, seed=[3, 7], dtype=tf.int64)[0]
    log_kq = np.log(5.0) + task.log_probability.numpy()
    true = (q * table[labels]).sum(1) / 0.5 - log_kq[labels]
    neg = (q @ table[sampled.numpy()].T) / 0.5 - log_kq[sampled.numpy()][None]
    hits = labels[:, None] == sampled.numpy()[None]
    logits = np.concatenate([true[:, None], np.where(hits, -np.inf, neg)], 1)
    negatives = np.concatenate([np.zeros((5, 1), bool), ~hits], 1)
    assert got == pytest.approx((_weighted_log_z(logits, negatives, beta) - true).mean(), rel=1e-4)


def test_hard_negatives_need_a_full_or_sampled_softmax():
    from tfrec_attn.config import ConfigError

    with pytest.raises(ConfigError, match=r"loss.hard_negative_beta.*needs loss.type=full or sampled"):
        load_config(CONFIG, ["loss.type=in_batch", "loss.hard_negative_beta=1"])
    with pytest.raises(ConfigError, match=r"loss.hard_negative_beta.*must be >= 0"):
        load_config(CONFIG, ["loss.hard_negative_beta=-1"])
    assert load_config(CONFIG, ["loss.hard_negative_beta=1"]).loss.hard_negative_beta == 1.0


def test_in_batch_softmax_removes_accidental_hits():
    q = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    c_table = [[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]
    labels = tf.constant([2, 2, 3])  # rows 0 and 1 share a label: not each other's negative
    task = InBatchSoftmaxTask(4, max_positions=10)
    task.set_item_counts(np.array([0, 0, 1.0, 1.0]))
    loss = float(task(q, labels, _candidates(c_table)))
    # Row 0: logits vs candidates [2, 2, 3] = [5, 5(hit, removed), 0] - logQ(0.5) (same for all)
    row01 = -np.log(np.exp(5) / (np.exp(5) + np.exp(0)))
    row2 = -np.log(np.exp(5) / (np.exp(5) + 2 * np.exp(0)))
    assert loss == pytest.approx((2 * row01 + row2) / 3, rel=1e-4)
    # Label smoothing: eps of each row's mass on its negatives, the accidental hit not among them.
    smoothed = InBatchSoftmaxTask(4, max_positions=10, label_smoothing=0.2)
    smoothed.set_item_counts(np.array([0, 0, 1.0, 1.0]))
    log_z01, log_z2 = np.log(np.exp(5) + 1), np.log(np.exp(5) + 2)
    row01_ls = 0.8 * (log_z01 - 5) + 0.2 * log_z01        # one negative (logit 0)
    row2_ls = 0.8 * (log_z2 - 5) + 0.2 * log_z2           # two negatives (logit 0)
    assert float(smoothed(q, labels, _candidates(c_table))) == pytest.approx((2 * row01_ls + row2_ls) / 3, rel=1e-4)


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    config = load_config(CONFIG, FAST)
    out = str(tmp_path_factory.mktemp("planted"))
    return train(config, planted_sequences(), out, verbose=0)


def test_planted_pattern_is_learned_within_seconds(planted_run):
    metrics = planted_run.metrics
    assert metrics["test"]["HR@10"] >= 0.9, metrics
    assert metrics["train_seconds"] < 120
    for name in ("history.csv", "curves.png", "metrics.json", "config.yaml", "vocab/items.txt"):
        assert os.path.exists(os.path.join(planted_run.output_dir, name)), name


class _Records(logging.Handler):
    """The warnings logged while it is attached to the root logger (as caplog at WARNING)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        root = logging.getLogger()
        self.level, root.level = root.level, logging.WARNING
        root.addHandler(self)
        return self

    def __exit__(self, *exc):
        root = logging.getLogger()
        root.removeHandler(self)
        root.level = self.level


@pytest.fixture(scope="module")
def planted_export(planted_run, tmp_path_factory):
    """The planted run's export (version 1, k=20; its base path holds nothing else) and the
    warnings logged while it was written. Tests that add versions copy it first."""
    base = tmp_path_factory.mktemp("planted_export")
    with _Records() as logged:
        path = export_retrieval(planted_run.model, planted_run.vocabulary, str(base), k=20)
    return base, path, logged.records


def test_exported_signature_matches_in_memory_metrics_and_excludes_history(planted_run, planted_export, tmp_path):
    run = planted_run
    base, path, _ = planted_export
    assert path == str(base / "retrieval" / "1")
    exported = evaluate_saved_model(path, run.split, "test")
    assert exported["history_items_returned"] == 0
    for name in ("HR@10", "NDCG@10"):
        assert exported[name] == pytest.approx(run.metrics["test"][name], abs=0.002)
    loaded = tf.saved_model.load(path)
    history = [["i3", "i4", "i5", "", ""], ["i10", "unknown-id", "i11", "i12", ""]]
    out = loaded.signatures["serving_default"](history=tf.constant(history))
    ids = out["item_ids"].numpy().astype(str)
    assert ids.shape == (2, 20)
    for row, hist in zip(ids, history):
        assert not set(row) & set(hist)
    assert ids[0][0] == "i6" and ids[1][0] == "i13"  # the planted rule, OOV ignored
    assert np.all(np.diff(out["scores"].numpy(), axis=1) <= 0)
    # A second export is version 2; versions are immutable.
    shutil.copytree(path, tmp_path / "retrieval" / "1")
    assert export_retrieval(run.model, run.vocabulary, str(tmp_path), k=20).endswith("/2")
    with pytest.raises(FileExistsError):
        export_retrieval(run.model, run.vocabulary, str(tmp_path), k=20, version=1)
    assert sorted(os.listdir(tmp_path / "retrieval")) == ["1", "2"]  # no temp dirs left


def test_scann_and_brute_force_agree_on_a_small_catalogue(planted_run, planted_export, tmp_path):
    run = planted_run
    brute = planted_export[1]  # the default index: brute force, k=20
    scann_path = export_retrieval(run.model, run.vocabulary, str(tmp_path), k=20, model_name="scann",
                                  index="scann", num_leaves=4, num_leaves_to_search=4,
                                  num_reordering_candidates=60)
    import scann  # noqa: F401

    history = tf.constant([["i1", "i2", "i3"], ["i40", "i41", ""], ["i7", "", ""]])
    a = tf.saved_model.load(brute).signatures["serving_default"](history=history)
    b = tf.saved_model.load(scann_path).signatures["serving_default"](history=history)
    assert a["item_ids"].numpy().tolist() == b["item_ids"].numpy().tolist()
    np.testing.assert_allclose(a["scores"].numpy(), b["scores"].numpy(), rtol=1e-4, atol=1e-4)


def test_saved_model_reloads_without_tfrec_attn(planted_export, tmp_path):
    path = planted_export[1]
    history = [["i20", "i21", "i22"], ["i50", "", ""]]
    expected = tf.saved_model.load(path).signatures["serving_default"](
        history=tf.constant(history))["item_ids"].numpy().astype(str).tolist()
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        loaded = tf.saved_model.load({path!r})
        out = loaded.signatures["serving_default"](history=tf.constant({history!r}))
        assert "tfrec_attn" not in sys.modules
        print(json.dumps(out["item_ids"].numpy().astype(str).tolist()))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected


def test_evaluator_on_in_memory_model_is_reproducible(planted_run):
    from tfrec_attn.evaluation.retrieval import catalogue_scorer

    loaded = RunDirectory(planted_run.output_dir).load()
    scorer = catalogue_scorer(loaded.model, loaded.vocabulary, planted_run.split)
    again = Evaluator(planted_run.split, "test").evaluate(scorer)
    assert again["NDCG@10"] == pytest.approx(planted_run.metrics["test"]["NDCG@10"], abs=1e-6)


def _batch(model_config_overrides=()):
    from tfrec_attn.data.sequences import sequence_dataset
    from tfrec_attn.features.vocab import ItemVocabulary

    data = planted_sequences(num_items=40, num_users=64, seed=3)
    from tfrec_attn.data import leave_one_out

    split = leave_one_out(data.interactions)
    vocab = ItemVocabulary(split.item_vocab)
    ds = sequence_dataset([split.item_vocab[s] for s in split.train_sequences()], vocab, max_len=20,
                          batch_size=64, shuffle=False, bucket_by_length=False)
    return vocab, next(iter(ds))


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_static_shape_loss_equals_dynamic_loss(loss):
    """The XLA path keeps padding with weight 0; it must compute the same loss."""
    from tfrec_attn.training.retrieval import build_model

    vocab, batch = _batch()
    config = load_config(CONFIG, FAST + [f"loss.type={loss}", "model.dropout=0.0"])
    model = build_model(config, vocab, np.ones(vocab.num_indices))
    dynamic = float(model.compute_loss(batch))
    model.static_shapes = True
    static = float(model.compute_loss(batch))
    assert static == pytest.approx(dynamic, rel=1e-5)


@pytest.mark.parametrize("loss", ["full", "sampled", "in_batch"])
def test_mixed_precision_numerics_on_cpu(loss):
    """bfloat16 compute (the CPU mixed-precision policy) stays close to float32; losses stay float32."""
    from tfrec_attn.training.retrieval import build_model

    vocab, batch = _batch()
    config = load_config(CONFIG, FAST + ["model.dropout=0.0", f"loss.type={loss}", "loss.num_negatives=20"])
    reference = build_model(config, vocab)
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_model(config, vocab)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(reference.get_weights())
    assert mixed.user_tower.compute_dtype == "bfloat16"
    loss32, loss16 = float(reference.compute_loss(batch)), float(mixed.compute_loss(batch))
    assert loss16 == pytest.approx(loss32, rel=0.02)
    history = batch[0]["history"]
    s32, s16 = reference.score_items(history).numpy(), mixed.score_items(history).numpy()
    assert s16.dtype == np.float32
    assert np.corrcoef(s32.ravel(), s16.ravel())[0, 1] > 0.99


def test_item_bias_scaling_and_future_window_train_and_export_consistently(tmp_path):
    config = load_config(CONFIG, FAST + ["model.item_bias=true", "model.scale_embeddings=true",
                                         "loss.future_window=3", "loss.future_weight=0.5",
                                         "train.epochs=5"])  # HR@10 1.0 from epoch 2 (seeds 42, 1, 2)
    run = train(config, planted_sequences(), str(tmp_path / "run"), verbose=0)
    assert run.metrics["test"]["HR@10"] >= 0.9
    assert run.model.item_embeddings().shape[-1] == 33  # 32 + bias
    bias = run.model.item_bias.embeddings.numpy()
    assert np.abs(bias).max() > 0  # the bias is trained
    path = export_retrieval(run.model, run.vocabulary, str(tmp_path / "export"), k=20)
    exported = evaluate_saved_model(path, run.split, "test")
    assert exported["NDCG@10"] == pytest.approx(run.metrics["test"]["NDCG@10"], abs=0.002)
    loaded = tf.saved_model.load(path)
    history = tf.constant([["i3", "i4", "i5"]])
    top = loaded.signatures["serving_default"](history=history)
    ranked = loaded.signatures["rank"](history=history, candidates=top["item_ids"])
    np.testing.assert_allclose(ranked["scores"].numpy(), top["scores"].numpy(), rtol=1e-5, atol=1e-5)


def test_optimizer_ema_is_judged_and_kept(tmp_path):
    from tfrec_attn.training.callbacks import SwapEMAWeights

    model = tf.keras.Sequential([tf.keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros",
                                                       input_shape=(1,))])
    model.compile(tf.keras.optimizers.SGD(1.0, use_ema=True, ema_momentum=0.5), "mse")
    seen, trained_from = [], []

    class Probe(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            trained_from.append(float(self.model.weights[0][0, 0]))

        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(self.model.weights[0][0, 0]))

    x = np.ones((4, 1), np.float32)
    y = np.full((4, 1), 2.0, np.float32)
    ema = SwapEMAWeights()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False, callbacks=[ema, Probe(), ema.swap_back])
    # SGD(1) on mse from w=0 to target 2: w jumps 0 -> 4 -> 0 (step: w -= 2*(w-2)).
    # Step 1: w=4, avg = .5*0 + .5*4 = 2: epoch 1's judge sees the average, 2. Epoch 2
    # trains from the raw w=4: w=0, avg = .5*2 + .5*0 = 1.
    assert seen == [2.0, 1.0]
    assert trained_from == [0.0, 4.0]
    assert float(model.weights[0][0, 0]) == 1.0  # fit ends with the average (Keras' finalize)


def test_refit_with_validation_trains_on_validation_targets(tmp_path):
    from tfrec_attn.evaluation.retrieval import catalogue_scorer

    config = load_config(CONFIG, FAST + ["train.epochs=2", "train.refit_with_validation=true"])
    run = train(config, planted_sequences(), str(tmp_path / "run"), verbose=0)
    assert run.metrics["refit_seconds"] > 0 and "refit" in run.metrics["note"]
    assert run.split.train_sequences(include_validation=True)[0].tolist() == run.split.sequences[0][:-1].tolist()
    # The returned model is the refit one, and it is what the run directory (and export) restore.
    loaded = RunDirectory(run.output_dir).load()
    scorer = catalogue_scorer(loaded.model, loaded.vocabulary, run.split)
    again = Evaluator(run.split, "test").evaluate(scorer)
    assert again["NDCG@10"] == pytest.approx(run.metrics["test"]["NDCG@10"], abs=1e-6)


def test_a_run_reloads_from_config_and_weights_in_a_fresh_process(planted_run):
    """model.json + checkpoints/final rebuild the model without the trainer or the config."""
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        import tfrec_attn
        from tfrec_attn.data import leave_one_out
        from tfrec_attn.data.synthetic import planted_sequences
        from tfrec_attn.evaluation import Evaluator
        from tfrec_attn.features.vocab import ItemVocabulary
        from tfrec_attn.models import load_model

        run = {planted_run.output_dir!r}
        model = load_model(run)
        vocabulary = ItemVocabulary.load(run + "/vocab/items.txt")
        split = leave_one_out(planted_sequences().interactions)
        rows = vocabulary.model_indices(split.item_vocab) - 2

        def score(users, histories):
            width = max(map(len, histories))
            batch = np.zeros((len(histories), width), np.int64)
            for r, h in enumerate(histories):
                batch[r, :len(h)] = rows[np.asarray(h)] + 2
            return tf.gather(model.score_items(tf.constant(batch)), rows, axis=1).numpy()

        lines = []
        model.summary(print_fn=lines.append)
        print(json.dumps({{"ndcg": Evaluator(split, "test").evaluate(score, sampled=False)["NDCG@10"],
                          "summary": "\\n".join(lines), "class": type(model).__name__}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
    assert result["class"] == "SequentialRetrievalModel"
    assert result["ndcg"] == pytest.approx(planted_run.metrics["test"]["NDCG@10"], abs=1e-9)
    assert "user_tower (UserTower)" in result["summary"] and "item_tower (IdItemTower)" in result["summary"]
    assert "Skipping" not in proc.stderr and "non-serializable" not in proc.stderr


def test_export_writes_no_serialization_warnings(planted_export):
    noise = [r.getMessage() for r in planted_export[2] if "serializ" in r.getMessage()]
    assert not noise, noise[:2]


def test_validation_every_other_epoch_selects_among_the_evaluated_epochs(tmp_path):
    from tfrec_attn.training.engine import read_history

    config = load_config(CONFIG, FAST + ["train.epochs=4", "train.eval_every=2"])
    run = train(config, planted_sequences(), str(tmp_path / "run"), verbose=0)
    history = read_history(str(tmp_path / "run" / "history.csv"))
    assert [("val_ndcg10" in row) for row in history] == [False, True, False, True]
    assert run.metrics["best_epoch"] in (2, 4) and run.metrics["validation"]["val_ndcg10"] > 0
