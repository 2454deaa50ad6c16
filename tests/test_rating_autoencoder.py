"""The kernel autoencoder recipe (GLocal-K): its kernels compute what the paper defines, the stage
switch follows the training steps, the engine-trained model beats the biased baseline on ratings
with an interaction the baseline cannot express, and the ``rating`` export gives the in-memory
ratings in a fresh TF-only process and from the run's files alone."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from test_rating_recipe import biased_reference, planted_dataset

from tfrec_attn.config import ConfigError, load_config
from tfrec_attn.data import Interactions, RatingSplit
from tfrec_attn.layers.kernels import GlobalKernel, LocalKernelDense, row_windows
from tfrec_attn.models.rating_autoencoder import KernelRatingAutoencoder
from tfrec_attn.training import KernelAutoencoderRecipe, RatingRecipe, RunDirectory, train

TINY = ["recipe=kernel_autoencoder", "model.hidden_units=64", "model.pretrain_epochs=15", "train.epochs=40",
        "train.passes_per_epoch=5", "train.learning_rate=0.01", "train.patience=40"]


def test_the_local_kernel_masks_the_weights_by_the_distance_of_their_points():
    layer = LocalKernelDense(4, kernel_dim=2, activation="sigmoid", l2=2.0, sparsity=3.0)
    layer.build((None, 3))
    rng = np.random.default_rng(0)
    u, v, w, b = rng.normal(0, 0.6, (3, 2)), rng.normal(0, 0.6, (4, 2)), rng.normal(size=(3, 4)), rng.normal(size=4)
    for weight, value in zip((layer.u, layer.v, layer.w, layer.b), (u, v, w, b)):
        weight.assign(value)
    kernel = np.maximum(0.0, 1.0 - ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1))
    assert 0 < (kernel == 0).sum() < kernel.size  # some connections are cut, some kept
    np.testing.assert_allclose(layer.kernel().numpy(), kernel, atol=1e-6)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(x).numpy(), 1 / (1 + np.exp(-(x @ (w * kernel) + b))), rtol=1e-5)
    np.testing.assert_allclose(layer.penalty().numpy(), 2.0 / 2 * (w ** 2).sum() + 3.0 / 2 * (kernel ** 2).sum(),
                               rtol=1e-5)


def test_the_global_kernel_convolves_each_window_as_the_whole_matrix_would_be():
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 6, (7, 9)).astype(np.float32)
    reconstruction = rng.normal(3, 1, (7, 9)).astype(np.float32)
    residual = GlobalKernel(num_items=7, size=3)  # starts as the identity: the convolved matrix is the matrix
    np.testing.assert_allclose(residual(reconstruction, row_windows(matrix, 3)).numpy(), matrix)
    residual.c.assign(rng.normal(0, 1, (7, 9)))  # then: the identity + the items' mean vote
    np.testing.assert_allclose(residual.filter(reconstruction).numpy(), np.eye(1, 9, 4).reshape(3, 3) + (
        reconstruction.mean(axis=1) @ residual.c.numpy() / 7).reshape(3, 3), rtol=1e-5)
    layer = GlobalKernel(num_items=7, size=3, dot_scale=0.5, residual=False)  # GLocal-K's
    out = layer(reconstruction, row_windows(matrix, 3)).numpy()
    votes = layer.c.numpy()
    kernel = (reconstruction.mean(axis=1) @ votes * 0.5).reshape(3, 3)
    np.testing.assert_allclose(layer.filter(reconstruction).numpy(), kernel, rtol=1e-5)
    padded = np.pad(matrix, 1)
    expected = np.array([[(padded[i:i + 3, j:j + 3] * kernel).sum() for j in range(9)] for i in range(7)])
    np.testing.assert_allclose(out, np.maximum(expected, 0), rtol=1e-4, atol=1e-4)
    # a batch of every item estimates the filter exactly; a batch of some, scaled to the catalogue
    items = np.array([4, 0, 6, 2, 1, 5, 3])
    np.testing.assert_allclose(layer.filter(reconstruction[items], items).numpy(), kernel, rtol=1e-5)
    some = np.array([2, 5])
    np.testing.assert_allclose(layer.filter(reconstruction[some], some).numpy(),
                               (reconstruction[some].mean(axis=1) @ votes[some] * 3.5 * 0.5).reshape(3, 3), rtol=1e-5)


def test_the_global_kernel_joins_after_the_pretraining_steps():
    tf.keras.utils.set_random_seed(0)
    model = KernelRatingAutoencoder(6, 5, hidden_units=8, pretrain_steps=3, rating_min=-9, rating_max=9).build_weights()
    matrix = np.random.default_rng(2).integers(0, 6, (6, 5)).astype(np.float32)
    rows = row_windows(matrix, 3)
    pretrained = np.clip(model.autoencode(matrix).numpy(), -9, 9)
    np.testing.assert_allclose(model.complete(matrix).numpy(), pretrained, rtol=1e-6)
    np.testing.assert_allclose(model.reconstruct(np.arange(6), rows).numpy(), model.autoencode(matrix).numpy())
    model.kernel.c.assign(np.random.default_rng(3).normal(0, 5.0, model.kernel.c.shape))
    np.testing.assert_allclose(model.complete(matrix).numpy(), pretrained, rtol=1e-6)  # still pre-training
    model.steps.assign(3)
    fine = model.complete(matrix).numpy()
    assert np.abs(fine - pretrained).max() > 1e-3
    np.testing.assert_allclose(fine, model.complete(matrix, fine_tuned=True).numpy())
    np.testing.assert_allclose(np.clip(model.reconstruct(np.arange(6), rows).numpy(), -9, 9), fine, rtol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    dataset, split = planted_dataset()
    run = tmp_path_factory.mktemp("glocal") / "run"
    return train(load_config(None, TINY), dataset, str(run), split=split, verbose=0), split


def test_it_beats_the_biased_baseline_selected_on_the_rating_recipes_hold_out(trained):
    result, split = trained
    test = result.metrics["test"]
    reference = biased_reference(split)
    assert test["baseline_RMSE"] == pytest.approx(reference["RMSE"])
    assert test["count"] == len(split.test) and test["oov_items"] == 3
    assert test["RMSE"] < 0.85 * reference["RMSE"], (test, reference)
    assert test["MAE"] < reference["MAE"]
    # the same hold-out as the rating recipe's (their validation predictions can be blended)
    rating = RatingRecipe(load_config(None, ["recipe=rating"]), None, split)
    np.testing.assert_array_equal(result.recipe.is_validation, rating.is_validation)
    assert result.metrics["best_epoch"] > 15  # selected in the fine-tuning stage
    assert int(result.model.steps.numpy()) == result.metrics["best_epoch"] * 5  # the refit: the selected epochs
    # The validation stage completes the matrix without the hold-out: none of its ratings is an input.
    recipe = result.recipe
    users, items, _ = recipe.stage_ratings("validation")
    matrix = recipe.matrix(False)
    assert not matrix[recipe.vocabulary.model_indices(items), recipe._user_columns(users)].any()
    assert recipe.matrix(True)[recipe.vocabulary.model_indices(items), recipe._user_columns(users)].all()


def test_the_rating_export_gives_the_in_memory_ratings_in_a_fresh_process_and_from_the_files(trained, tmp_path):
    result, split = trained
    recipe = result.recipe
    [path] = result.export(str(tmp_path / "memory"))
    [again] = RunDirectory(result.output_dir).export(str(tmp_path / "files"))  # no data: the run's files
    users = list(split.test.user_ids[:20]) + ["nobody", "u3"]
    items = list(split.test.item_ids[:20]) + ["i5", "no such item"]
    expected = recipe.ratings_from(recipe.completed(result.model, True), users, items)
    assert expected[-2] == pytest.approx(recipe.completed(result.model, True)[
        recipe.vocabulary.model_indices(["i5"])[0]].mean())
    script = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        "out = {}\n"
        "for path in sys.argv[1:3]:\n"
        "    f = tf.saved_model.load(path).signatures['serving_default']\n"
        "    r = f(user_id=tf.constant(json.loads(sys.argv[3])), item_id=tf.constant(json.loads(sys.argv[4])))\n"
        "    out[path] = [r['rating'].numpy().tolist(), r['known_user'].numpy().tolist()]\n"
        "    try:\n"
        "        f(user_id=tf.constant(['u1', 'u2']), item_id=tf.constant(['i1']))\n"
        "    except tf.errors.InvalidArgumentError as e:\n"
        "        out[path].append('same length' in e.message)\n"
        "print(json.dumps(out))\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    answer = subprocess.run([sys.executable, "-c", script, path, again, json.dumps([str(u) for u in users]),
                             json.dumps([str(i) for i in items])], capture_output=True, text=True, env=env,
                            timeout=300)
    assert answer.returncode == 0, answer.stderr[-2000:]
    served = json.loads(answer.stdout.strip().splitlines()[-1])
    for ratings, known, refused in served.values():
        np.testing.assert_allclose(ratings, expected, rtol=1e-5)
        assert known == [True] * 20 + [False, True] and refused


def test_the_served_rating_model_answers_the_client_and_the_cli_over_grpc(trained, tmp_path, capsys):
    import grpc

    from tfrec_attn.app.cli import main
    from tfrec_attn.serving.client import RecommenderClient, ServingError
    from tfrec_attn.serving.config import single_model_config
    from tfrec_attn.serving.server import ModelServer

    result, split = trained
    recipe = result.recipe
    result.export(str(tmp_path), model_name="stars")
    server = ModelServer(single_model_config("stars", str(tmp_path / "stars")), port=0, host="127.0.0.1",
                         poll_wait_seconds=0).start()
    try:
        user = str(split.test.user_ids[0])
        items = [str(i) for i in split.test.item_ids[:6]] + ["no such item"]
        expected = recipe.ratings_from(recipe.completed(result.model, True), [user] * len(items), items)
        target = f"127.0.0.1:{server.port}"
        with RecommenderClient(target, model_name="stars") as client:
            answer = client.ratings(user, items)
            np.testing.assert_allclose(answer.ratings, expected, rtol=1e-5)
            assert answer.known_user
            nobody = client.ratings("nobody", items[:2])
            np.testing.assert_allclose(nobody.ratings, recipe.ratings_from(
                recipe.completed(result.model, True), ["nobody"] * 2, items[:2]), rtol=1e-5)
            assert not nobody.known_user
            with pytest.raises(ServingError) as caught:  # user_id and item_id of different lengths
                client.predict({"user_id": np.array(["u1", "u2"], object), "item_id": np.array(["i1"], object)})
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
            np.testing.assert_allclose(client.ratings(user, items).ratings, expected, rtol=1e-5)  # still serving
        # The CLI: `tfrec-attn query --model_name stars --user U --items ...`
        query = ["query", "--server", target, "--model_name", "stars", "--items", ",".join(items[:3])]
        assert main([*query, "--user", user]) == 0
        out, err = capsys.readouterr()
        assert [line.split() for line in out.splitlines()] == [[i, f"{r:.3f}"] for i, r in zip(items, expected[:3])]
        assert not err
        assert main([*query, "--user", "nobody"]) == 0
        assert "user 'nobody' has no training rating in the model" in capsys.readouterr().err
        assert main(["query", "--server", target, "--model_name", "stars", "--user", user]) == 2
        assert capsys.readouterr().err.strip() == "error: --user needs --items: the comma-separated item ids to rate"
    finally:
        server.stop()


def test_bad_configs_and_unratable_splits_are_refused():
    with pytest.raises(ConfigError, match=r"model.pretrain_epochs.*must be < train.epochs"):
        load_config(None, TINY + ["model.pretrain_epochs=40"])
    with pytest.raises(ConfigError, match=r"model.global_kernel_size.*positive odd number"):
        load_config(None, TINY + ["model.global_kernel_size=2"])
    load_config(None, TINY + ["model.pretrain_epochs=40", "model.global_kernel=false"])  # no fine-tuning: fine
    zero = Interactions.from_rows(["a", "a", "b", "b"], ["x", "y", "x", "y"], [1, 2, 3, 4], [0.0, 1.0, 2.0, 3.0])
    recipe = KernelAutoencoderRecipe(load_config(None, TINY), None, RatingSplit("zero", zero, zero.take([0])))
    with pytest.raises(ValueError, match=r"split 'zero': ratings must be > 0"):
        recipe.prepare(None)


def test_the_main_job_skips_the_rating_model_on_data_without_ratings(tmp_path, capsys):
    from tfrec_attn.app.stages import train_rating_model
    from tfrec_attn.data import Dataset, leave_one_out

    rows = [(f"u{u}", f"i{(u + k) % 7}", 10 * u + k, np.nan) for u in range(6) for k in range(4)]
    interactions = Interactions.from_rows(*zip(*rows))
    dataset = Dataset("unrated", interactions, {})
    assert train_rating_model(load_config(None, TINY), dataset, leave_one_out(interactions), str(tmp_path)) is None
    assert "unrated has no ratings: no rating model" in capsys.readouterr().out
    assert not os.listdir(tmp_path)
