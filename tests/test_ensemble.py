"""One retrieval model for every item: the id + text ensemble (models/ensemble.py,
training/ensemble.py) — its score space, the new-item calibration, the run directory, the
export and add-items."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfrec_attn.config import ConfigError, load_config


@pytest.fixture(scope="module")
def ensemble_run(topic_runs, tiny_bert_dir, tmp_path_factory):
    """The ensemble of the topic catalogue's id and text towers (trained on its cold split;
    the finished parts are reused, as an interrupted ensemble run resumes), combined on
    validation."""
    from conftest import topic_config

    from tfrec_attn.training import train

    data, cold, runs = topic_runs
    out = tmp_path_factory.mktemp("ensemble") / "run"
    for name in ("id", "text"):
        shutil.copytree(runs[name].run_dir, out / "parts" / name)
    # As few pseudo-cold items as the cold split has cold ones (its 20% of users' targets would
    # be half of this small catalogue).
    result = train(topic_config("ensemble", tiny_bert_dir, ["model.item_tower.pseudo_cold_fraction=0.04"]), data,
                   str(out), verbose=0, split=cold.split, evaluate_test=False)
    return data, cold, runs, result


def _features(result, data, split):
    from tfrec_attn.training.retrieval import catalogue_text_features

    return catalogue_text_features(result.config, data, split, progress=False)


def test_known_items_score_the_sum_and_new_items_the_calibrated_text_score(ensemble_run):
    _, cold, runs, result = ensemble_run
    model = result.model
    assert model.id_model.item_tower.kind == "id" and model.text_model.item_tower.kind == "text"
    model.set_combination(0.5, 2.0, 0.3)
    try:
        history = tf.constant([[5, 9, 3], [7, 0, 0]], tf.int64)
        expected = (model.id_model.score_items(history).numpy()
                    + 0.5 * model.text_model.score_items(history).numpy())
        np.testing.assert_allclose(model.score_items(history).numpy(), expected, rtol=1e-5, atol=1e-5)
        features = tf.random.stateless_normal([3, model.text_model.item_tower.text_dim], seed=[1, 2])
        new = model.new_item_vectors(features)
        user = model(history)
        text_user = model.text_model(history)
        expected = 2.0 * tf.matmul(text_user, model.text_model.new_item_vectors(features), transpose_b=True) + 0.3
        np.testing.assert_allclose(tf.matmul(user, new, transpose_b=True).numpy(), expected.numpy(), rtol=1e-5,
                                   atol=1e-5)
    finally:
        model.set_combination(**result.metrics["combination"])


def test_the_new_item_offset_is_fitted_on_a_text_part_that_never_saw_the_pseudo_cold_items(ensemble_run):
    """``held_out``: the text part's config trained again without the pseudo-cold items (the
    validation targets of a seeded ``pseudo_cold_fraction`` of users) scores them, as a truly
    new item is scored; the fitted calibration on them is 1, and on the real cold items (the
    test's) it is nearer 1 than with the offset fitted on the text part's own, in-sample scores."""
    from tfrec_attn.evaluation import cold_start_split, evaluate_cold_start
    from tfrec_attn.evaluation.retrieval import catalogue_scorer
    from tfrec_attn.training.ensemble import CALIBRATION_PART, fit_combination
    from tfrec_attn.training.retrieval import retrievers
    from tfrec_attn.training.run_dir import RunDirectory

    data, cold, runs, result = ensemble_run
    calibration = result.metrics["calibration"]
    assert calibration["new_item_calibration"] == "held_out"
    assert 0.9 <= calibration["pseudo_cold"]["cold_to_warm"] <= 1.1, calibration["pseudo_cold"]
    tower = result.config.model.item_tower
    pseudo = cold_start_split(cold.split, tower.pseudo_cold_fraction, seed=result.config.seed, stage="validation")
    part = RunDirectory(os.path.join(result.output_dir, "parts", CALIBRATION_PART)).load(data, pseudo.split)
    names = set(cold.split.item_vocab[pseudo.cold_items])
    assert names and not names & set(part.vocabulary.item_ids)  # never trained on
    assert names <= set(result.vocabulary.item_ids)  # ... which the text part was
    selected = {name: retrievers(runs[name])[1] for name in ("id", "text")}
    in_sample = fit_combination(selected["id"], selected["text"], cold.split, pseudo)
    assert in_sample["text_weight"] == result.metrics["combination"]["text_weight"]
    assert in_sample["new_item_offset"] != pytest.approx(result.metrics["combination"]["new_item_offset"], abs=1e-3)
    features = _features(result, data, cold.split)
    held_out = evaluate_cold_start(cold, catalogue_scorer(result.model, result.vocabulary, cold.split,
                                                          item_features=features))["calibration"]["cold_to_warm"]
    model = result.model
    model.set_combination(in_sample["text_weight"], in_sample["new_item_scale"], in_sample["new_item_offset"])
    try:
        naive = evaluate_cold_start(cold, catalogue_scorer(model, result.vocabulary, cold.split,
                                                           item_features=features))["calibration"]["cold_to_warm"]
    finally:
        model.set_combination(**result.metrics["combination"])
    print(f"real cold items' calibration: held out {held_out:.2f}, in sample {naive:.2f}")
    assert abs(np.log(held_out)) < abs(np.log(naive)), (held_out, naive)


def test_the_offset_makes_new_items_appear_as_often_as_they_are_wanted():
    from tfrec_attn.training.ensemble import new_item_offset

    rng = np.random.default_rng(0)
    users, k = 400, 10
    known_top = -np.sort(-rng.normal(size=(users, k)), axis=1)
    new_top = -np.sort(-rng.normal(-6.0, 1.0, size=(users, k)), axis=1)  # far below: buried unless lifted
    wanted_new = rng.random(users) < 0.2

    def ratio(b):  # brute force: merge the lists and count
        merged = np.concatenate([known_top, new_top + b], axis=1)
        top = np.argsort(-merged, axis=1)[:, :k]
        shown = int((top >= k).sum())
        return (shown / wanted_new.sum()) / ((users * k - shown) / (~wanted_new).sum())

    b = new_item_offset(known_top, new_top, wanted_new, k)
    assert ratio(0.0) < 0.05  # uncalibrated: buried
    assert 0.9 < ratio(b) < 1.1
    assert ratio(b - 1.0) < ratio(b) < ratio(b + 1.0)


def test_one_model_places_new_items_where_their_text_predicts_them_and_few_elsewhere(ensemble_run):
    """The cold items (never trained on) are the topic catalogue's: a user's next item is in
    the topic after the last one's, and an item's text names its topic. Calibrated, a new item
    enters the top 10 of the users whose last item predicts it, and of few others; the same
    model with the new-item offset raised (uncalibrated) pushes it into everyone's."""
    from tfrec_attn.evaluation import evaluate_cold_start
    from tfrec_attn.evaluation.retrieval import catalogue_scorer

    data, cold, runs, result = ensemble_run
    model, split = result.model, cold.split
    features = _features(result, data, split)
    assert not set(split.item_vocab[cold.cold_items]) & set(result.vocabulary.item_ids)  # new to the model
    scorer = catalogue_scorer(model, result.vocabulary, split, item_features=features)
    figures = evaluate_cold_start(cold, scorer)
    ids = evaluate_cold_start(cold, catalogue_scorer(runs["id"].model, runs["id"].vocabulary, split))
    assert figures["cold"]["HR@10"] > 0.3 and ids["cold"]["HR@10"] < 0.1, (figures, ids)
    # Known items as well as the id part; the new items (of the right topic: they belong in the
    # top 10) move the warm targets down some, not out.
    assert figures["warm_without_cold"]["NDCG@10"] >= ids["warm"]["NDCG@10"] - 0.03, (figures, ids)
    assert figures["warm"]["NDCG@10"] >= 0.75 * figures["warm_without_cold"]["NDCG@10"], figures
    # Neither buried nor pushed (uncalibrated offsets give 0.001 and 10 here; this small
    # catalogue's held-out calibration gives 0.45, its in-sample one 0.33).
    assert 1 / 3 <= figures["calibration"]["cold_to_warm"] <= 3.0, figures["calibration"]

    def precision(score):
        """Of the cold items' top-10 appearances, the share in users whose last item's topic
        comes just before the item's."""
        users = split.evaluated
        histories = [split.sequences[u][:-1] for u in users]
        scores = np.asarray(score(users, histories), np.float64)
        for row, h in enumerate(histories):
            scores[row, h] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :10]
        topic = np.array([int(str(i)[1:].split("i")[0]) for i in split.item_vocab])
        topics = topic.max() + 1
        right = shown = 0
        for row, h in enumerate(histories):
            for item in top[row][np.isin(top[row], cold.cold_items)]:
                shown += 1
                right += topic[item] == (topic[h[-1]] + 1) % topics
        return right / max(shown, 1), shown / len(users)

    calibrated, per_user = precision(scorer)
    assert calibrated > 0.5 and per_user > 0.1, (calibrated, per_user)  # at random: 1/6
    offset = result.metrics["combination"]["new_item_offset"]
    model.new_item_offset.assign(offset + 20.0)
    try:
        pushed, pushed_per_user = precision(catalogue_scorer(model, result.vocabulary, split, item_features=features))
    finally:
        model.new_item_offset.assign(offset)
    # Pushed, the new items fill nearly every list (of 10) and mostly in the wrong users'.
    assert pushed_per_user > 9.0 > 2 * per_user and pushed < 0.3, (pushed, pushed_per_user, calibrated, per_user)


def test_the_run_reloads_exports_and_adds_items_read_by_tensorflow_text_alone(ensemble_run, tmp_path):
    from tfrec_attn.data.dataset import Item
    from tfrec_attn.export.catalogue import add_items
    from tfrec_attn.training import RunDirectory

    data, cold, runs, result = ensemble_run
    run = RunDirectory(result.output_dir)
    assert run.has_checkpoint("best") and result.metrics["calibration"]["pseudo_cold"]["items"] > 0
    reloaded = run.load(data, cold.split)
    history = tf.constant([[4, 8, 12]], tf.int64)
    np.testing.assert_allclose(reloaded.model.score_items(history).numpy(), result.model.score_items(history).numpy(),
                               rtol=1e-5, atol=1e-5)
    assert reloaded.model.combination() == pytest.approx(result.metrics["combination"])
    (path,) = reloaded.export(str(tmp_path / "export"))
    # A new item of topic 1 (text "<topic-1 word> ..."), asked for a history ending in topic 0.
    from tfrec_attn.data.synthetic import TOPIC_WORDS

    new = Item("brand-new", f"{TOPIC_WORDS[1]} newcomer")
    version = add_items(str(tmp_path / "export"), {"brand-new": new})
    last = [i for i in result.vocabulary.item_ids if i.startswith("t0")][:1]
    script = (f"import json, sys, tensorflow as tf, tensorflow_text\n"
              f"m = tf.saved_model.load({version!r})\n"
              f"out = m.signatures['serving_default'](history=tf.constant([{last!r}]))\n"
              "assert 'tfrec_attn' not in sys.modules\n"
              "print(json.dumps(out['item_ids'].numpy().astype(str)[0].tolist()))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    here = tf.saved_model.load(version).signatures["serving_default"](history=tf.constant([last]))
    assert served == here["item_ids"].numpy().astype(str)[0].tolist()
    assert "brand-new" in served[:10], served  # placed by its text, in the one model's top 10
    del path


def test_part_configs_split_the_budget_and_bad_options_name_their_field():
    from tfrec_attn.training.ensemble import part_configs

    config = load_config(None, ["model.item_tower.type=ensemble", "train.time_budget_seconds=100",
                                "model.item_tower.text_share=0.25", "model.item_tower.projection=mlp",
                                "model.item_tower.whitening=zca"])
    parts = part_configs(config)
    assert parts["id"].model.item_tower.type == "id" and parts["id"].model.item_tower.whitening == "none"
    assert parts["text"].model.item_tower.type == "text" and parts["text"].model.item_tower.projection == "mlp"
    assert parts["id"].train.time_budget_seconds == 75 and parts["text"].train.time_budget_seconds == 25
    assert parts["text"].model.item_tower.whitening == "zca" and config.model.item_tower.reads_text
    with pytest.raises(ConfigError, match=r"model.item_tower.text_part='id' must be one of text, hybrid"):
        load_config(None, ["model.item_tower.type=ensemble", "model.item_tower.text_part=id"])
    with pytest.raises(ConfigError, match=r"model.item_tower.text_share=1.0 must be in \(0, 1\)"):
        load_config(None, ["model.item_tower.type=ensemble", "model.item_tower.text_share=1"])
    with pytest.raises(ConfigError, match=r"model.item_tower.new_item_calibration='test' must be one of held_out, "
                                          r"in_sample"):
        load_config(None, ["model.item_tower.type=ensemble", "model.item_tower.new_item_calibration=test"])


def test_a_data_set_without_item_texts_falls_back_to_ids_and_empty_texts_are_one_error(tmp_path, capsys):
    from tfrec_attn.data.csv_reader import read_csv_dataset
    from tfrec_attn.data.errors import DataFileError
    from tfrec_attn.data.splits import leave_one_out
    from tfrec_attn.training.retrieval import catalogue_texts, without_item_text

    interactions = tmp_path / "events.csv"
    interactions.write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{u},i{(u + t) % 7},{t}\n" for u in range(6) for t in range(4)))
    config = load_config(None, ["model.item_tower.type=ensemble", "model.item_tower.id_init=pca"])
    bare = read_csv_dataset(str(interactions))
    fallen = without_item_text(config, bare)
    assert (fallen.model.item_tower.type, fallen.model.item_tower.id_init) == ("id", "random")
    assert capsys.readouterr().err.strip() == ("note: events has no item texts (no items file): "
                                               "model.item_tower.type=ensemble falls back to type=id")
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,text,genres\n" + "".join(f"i{i},,,\n" for i in range(7)))
    empty = read_csv_dataset(str(interactions), str(items))
    assert without_item_text(config, empty) is config  # an items file: its texts are read ...
    with pytest.raises(DataFileError) as caught:  # ... and all empty is one error naming the file
        catalogue_texts(config, empty, leave_one_out(empty.interactions))
    assert str(caught.value) == (f"{items}: title, text and genres are empty on all 7 item lines; "
                                 "model.item_tower.type=ensemble reads item text (fill them, or train with "
                                 "--set model.item_tower.type=id)")


def test_parts_trained_on_another_split_are_one_error_naming_the_part(topic_runs, tiny_bert_dir, tmp_path):
    from conftest import topic_config

    from tfrec_attn.data import leave_one_out
    from tfrec_attn.training import RunError, train

    data, _, runs = topic_runs
    for name in ("id", "text"):  # trained on the cold split
        shutil.copytree(runs[name].run_dir, tmp_path / "run" / "parts" / name)
    with pytest.raises(RunError, match=r"parts/id: the id part was trained on another split's items than this "
                                       r"run's; delete .*parts/id to train it again"):
        train(topic_config("ensemble", tiny_bert_dir), data, str(tmp_path / "run"), verbose=0,
              split=leave_one_out(data.interactions), evaluate_test=False)


def test_score_transfer_maps_one_models_scores_onto_anothers_mean_and_spread():
    from tfrec_attn.training.ensemble import score_transfer

    rng = np.random.default_rng(3)
    source = rng.normal(2.5, 0.7, size=(50, 40))
    target = 1.2 * source - 1.8 + rng.normal(0, 0.3, size=source.shape)
    scale, shift = score_transfer(source, target)
    mapped = scale * source + shift
    assert mapped.mean() == pytest.approx(target.mean()) and mapped.std() == pytest.approx(target.std())
    assert scale == pytest.approx(target.std() / source.std()) and scale > 1.2  # moments, not the shrunk OLS slope
    assert score_transfer(np.ones(5), np.arange(5.0)) == (1.0, pytest.approx(1.0))  # a constant source: shift only


def test_the_combination_moves_to_refit_parts_so_known_and_new_items_compete_as_fitted():
    """Refit parts score on scales of their own: the text weight and new-item score fitted on
    the selection checkpoints, moved through each part's score map, rank known and new items
    in the refit ensemble exactly as the fitted combination ranked them; applied unmoved,
    they do not."""
    from tfrec_attn.data.splits import leave_one_out
    from tfrec_attn.data.synthetic import planted_sequences
    from tfrec_attn.evaluation.protocol import Evaluator
    from tfrec_attn.training.ensemble import moved_combination

    split = leave_one_out(planted_sequences(num_items=30, num_users=60).interactions)
    rng = np.random.default_rng(5)
    rows, items = int(np.max(split.evaluated)) + 1, len(split.item_vocab) + 2

    class Scores:  # a Retriever's scorer over a fixed score matrix (users are its rows)
        def __init__(self, matrix):
            self.matrix = matrix

        def scorer(self, split):
            return lambda users, histories: self.matrix[np.asarray(users)]

    selected = {"id": rng.normal(1.0, 2.0, (rows, items)), "text": rng.normal(3.0, 0.5, (rows, items))}
    maps = {"id": (0.5, 0.7), "text": (4.0, -2.0)}  # selection = a * final + c
    finals = {name: (selected[name] - c) / a for name, (a, c) in maps.items()}
    fitted = {"text_weight": 0.8, "new_item_scale": 1.5, "new_item_offset": -0.4}
    moved, transfer = moved_combination(fitted, {n: Scores(m) for n, m in selected.items()},
                                        {n: Scores(m) for n, m in finals.items()}, split)
    for name, (a, c) in maps.items():
        assert transfer[name]["scale"] == pytest.approx(a) and transfer[name]["shift"] == pytest.approx(c)
    is_new = np.arange(items) % 4 == 0

    def ensemble(parts, combination):
        known = parts["id"] + combination["text_weight"] * parts["text"]
        new = combination["new_item_scale"] * parts["text"] + combination["new_item_offset"]
        return np.where(is_new[np.newaxis, :], new, known)

    users = Evaluator(split, "validation", num_negatives=0).users
    as_fitted, refit = ensemble(selected, fitted)[users], ensemble(finals, moved)[users]
    difference = maps["id"][0] * refit - as_fitted  # one constant: the same order everywhere
    np.testing.assert_allclose(difference, difference.flat[0], atol=1e-9)
    np.testing.assert_array_equal(np.argsort(-refit, axis=1), np.argsort(-as_fitted, axis=1))
    unmoved = ensemble(finals, fitted)[users]
    assert np.mean(np.argsort(-unmoved, axis=1)[:, :10] != np.argsort(-as_fitted, axis=1)[:, :10]) > 0.3
    same = moved_combination(fitted, {n: Scores(m) for n, m in selected.items()},
                             {n: Scores(m) for n, m in selected.items()}, split)[0]
    assert same == pytest.approx(fitted)  # no refit: nothing moves
