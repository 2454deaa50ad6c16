"""The run directory: a finished run (retrieval, ranking, rating) loaded in a fresh process
and exported there gives SavedModels whose outputs equal those of the in-memory model's
export; its layout lives in one place (:class:`RunDirectory`).

The ranking run's round trip is asserted on the run that ``tfrec-attn train`` trains in
tests/test_ranking.py (its export from memory, version 1, against ``tfrec-attn export``'s
from the run directory, version 2), with :func:`assert_same_outputs`: the same check, and
the two costliest exports of the suite (ranking and recommend) written once."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tfrec_attn.config import load_config
from tfrec_attn.data.synthetic import planted_sequences
from tfrec_attn.training import RunDirectory, RunError, train

SMALL_RETRIEVAL = ["model.embedding_dim=16", "model.num_blocks=1", "model.max_len=10", "loss.type=full",
                   "train.epochs=1", "train.refit_with_validation=false"]
SMALL_RANKING = ["recipe=ranking", "model.embedding_dim=16", "model.attention_units=[16]", "model.mlp_units=[16]",
                 "model.max_len=10", "train.epochs=1", "train.positions_per_user=5", "retrieval.candidates=10",
                 "export.k=5", "loss.hard_pool=10", "loss.hard_negatives=3", "loss.random_negatives=3"]
HISTORY = np.array([["i1", "i2", "i3"], ["i5", "", ""]], object)
CANDIDATES = np.array([["i4", "i6", "i9"], ["i6", "i2", "nope"]], object)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from test_rating_recipe import TINY, planted_dataset

    base = tmp_path_factory.mktemp("runs")
    data = planted_sequences(num_items=30, num_users=80, max_len=12)
    retrieval = train(load_config(None, SMALL_RETRIEVAL), data, str(base / "retrieval"), verbose=0)
    ranking = train(load_config(None, SMALL_RANKING + [f"retrieval.run_dir={retrieval.output_dir}"]), data,
                    str(base / "ranking"), verbose=0)
    ratings, split = planted_dataset(num_users=40, per_user=10)
    rating = train(load_config(None, TINY + ["train.epochs=1"]), ratings, str(base / "rating"), split=split,
                   verbose=0)
    return {"retrieval": retrieval, "ranking": ranking, "rating": rating}


def outputs(version_dir: str) -> dict:
    """Every output of the version's serving_default for the fixed requests."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    rating = name_of(os.path.dirname(version_dir)) == "rating"
    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    names = signature.structured_input_signature[1]
    feed = {"history": tf.constant(HISTORY if not rating else [["i1", "i2", ""], ["i3", "", ""]])}
    if "candidates" in names:
        feed["candidates"] = tf.constant(CANDIDATES if not rating else [["i4"], ["i5"]])
    return {name: value.numpy() for name, value in signature(**feed).items()}


def newest(path: str) -> str:
    from tfrec_attn.export.saved_model import versions

    return os.path.join(path, str(versions(path)[-1]))


def assert_same_outputs(expected_dir: str, got_dir: str, what: str) -> None:
    """The two SavedModel versions answer the fixed requests alike, output by output."""
    a, b = outputs(expected_dir), outputs(got_dir)
    assert a.keys() == b.keys() and a
    for key in a:
        if a[key].dtype == object:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{what}: {key}")
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6, err_msg=f"{what}: {key}")


def name_of(path: str) -> str:
    return os.path.basename(os.path.normpath(path))


def test_each_recipe_exports_the_same_models_from_memory_and_from_its_run_directory(runs, tmp_path):
    expected_models = {"retrieval": ["retrieval"], "rating": ["rating"]}  # ranking: tests/test_ranking.py
    for name, models in expected_models.items():
        result = runs[name]
        in_memory = result.export(str(tmp_path / name / "memory"))
        assert [name_of(os.path.dirname(p)) for p in in_memory] == models
        # A fresh process knows nothing but the run directory: config, model.json, vocab, checkpoints.
        fresh = tmp_path / name / "fresh"
        proc = subprocess.run([sys.executable, "-m", "tfrec_attn.app.cli", "export", result.output_dir,
                               "--export-dir", str(fresh)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        written = proc.stdout.split()
        assert [name_of(os.path.dirname(p)) for p in written] == models
        for model in models:
            assert_same_outputs(newest(str(tmp_path / name / "memory" / model)), newest(str(fresh / model)),
                                f"{name}/{model}")
    for name, result in runs.items():
        loaded = RunDirectory(result.output_dir).load()
        assert loaded.recipe.name == name and list(loaded.vocabulary.item_ids) == list(result.vocabulary.item_ids)


def test_run_directory_names_every_file_and_refuses_an_unfinished_run(runs, tmp_path):
    run = RunDirectory(runs["ranking"].output_dir)
    for path in (run.config_file, run.model_file, run.metrics_file, run.history_file, run.curves_file,
                 run.vocab_file("items.txt"), run.vocab_file("user_features.json"), run.checkpoint("final") + ".index",
                 run.checkpoint("best") + ".index"):
        assert os.path.isfile(path), path
    assert run.recipe_name() == "ranking" and run.finished
    with pytest.raises(RunError, match=rf"^run directory {tmp_path}: not a training run \(no config.yaml\)"):
        RunDirectory(str(tmp_path)).load()
    (tmp_path / "config.yaml").write_text("recipe: retrieval\n")
    with pytest.raises(RunError, match=r"not a finished training run \(no model.json\)"):
        RunDirectory(str(tmp_path)).export()
