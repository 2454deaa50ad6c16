"""Training the id + text ensemble (``model.item_tower.type: ensemble``,
:class:`~tfrec_attn.models.ensemble.EnsembleRetrievalModel`): one model for every item.

1. The retrieval recipe trains each part on its own, in ``RUN/parts/id`` and
   ``RUN/parts/text`` (a finished part is reused: an interrupted ensemble resumes), the text
   part with ``model.item_tower.text_share`` of ``train.time_budget_seconds``, the id part
   with the rest.
2. A pseudo-cold split plays the new items: the validation targets of a seeded
   ``model.item_tower.pseudo_cold_fraction`` of users, drawn as the cold-start protocol draws its cold items
   (:func:`~tfrec_attn.evaluation.cold_start.cold_start_split`, ``stage="validation"``),
   with every other interaction with them removed. With ``model.item_tower.new_item_calibration:
   held_out`` (the default) the text part's config trains once more on that split, in
   ``RUN/parts/calibration`` (no refit, the text part's budget): it never sees those items, so
   it scores them as the text part will score a truly new one. (``in_sample`` scores them with
   the text part itself, which trained on them, so they score as known items do: measured to
   bury real new items, docs/benchmarks.md.)
3. :func:`fit_combination` fits the combination on the validation split with the parts'
   selection checkpoints (trained without the validation targets):

   * ``text_weight`` w: known items score ``s_id + w · s_text``; w from ``TEXT_WEIGHTS``
     with the best validation NDCG@10 (0: the text part adds nothing to known items);
   * the new-item score ``a · s_text + b``, on the pseudo-cold split's validation stage: for
     each ``a`` of ``NEW_ITEM_SCALES``, ``b`` is the offset at which the pseudo-cold items
     (scored by their text alone) appear in the users' top 10 as often, per time they are
     wanted, as known items (calibration 1: neither buried nor pushed); the ``a`` with the
     best validation NDCG@10 over every user at that calibration is kept. With ``held_out``
     the pseudo-cold items are scored by the held-out copy, and ``(a, b)`` move to the text
     part's own score scale by :func:`score_transfer` (fitted on the items both trained on;
     two trainings of one config score on scales of their own).
4. The ensemble of the parts' final models with that combination is the run's model
   (``model.json`` + ``checkpoints/final``; the selection checkpoints' ensemble is ``best``),
   reported and exported by the retrieval recipe like any retrieval model. Parts refit on
   train + validation (``train.refit_with_validation``) score on scales of their own: the
   combination moves to them through each part's score map (:func:`moved_combination`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

TEXT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
NEW_ITEM_SCALES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
PARTS = ("id", "text")
CALIBRATION_PART = "calibration"  # RUN/parts/calibration: the text part without the pseudo-cold items


def part_configs(config) -> dict:
    """The retrieval configs of the ensemble's parts: the same user tower, loss and training,
    an id item tower and a ``text_part`` item tower, the budget split by ``text_share``."""
    tower = config.model.item_tower
    budget = config.train.time_budget_seconds
    kinds = {"id": dataclasses.replace(tower, type="id", whitening="none"),
             "text": dataclasses.replace(tower, type=tower.text_part,
                                         id_init=tower.id_init if tower.text_part == "hybrid" else "random")}
    shares = {"id": 1.0 - tower.text_share, "text": tower.text_share}
    return {name: dataclasses.replace(
        config, model=dataclasses.replace(config.model, item_tower=kinds[name]),
        train=dataclasses.replace(config.train, time_budget_seconds=budget * shares[name] if budget else 0.0))
        for name in PARTS}


def train_ensemble(config, dataset=None, output_dir: str = "runs/run", *, split=None, verbose: int = 1,
                   evaluate_test: bool = True, track_test: bool = False, strategy=None):
    """Trains both parts, fits the combination, writes and returns the ensemble's run
    (a :class:`~tfrec_attn.training.run_dir.TrainResult`; see the module docstring)."""
    from tfrec_attn.evaluation.cold_start import cold_start_split
    from tfrec_attn.models.ensemble import EnsembleRetrievalModel
    from tfrec_attn.training import train
    from tfrec_attn.training.retrieval import RetrievalRecipe, retrievers
    from tfrec_attn.training.run_dir import RunDirectory, RunError, TrainResult

    run = RunDirectory(output_dir)
    run.save_config(config)
    parts, seconds = {}, {}

    def train_part(name, part, part_split):
        part_run = RunDirectory(run.file("parts", name))
        began = time.perf_counter()
        if part_run.finished:
            parts[name] = part_run.load(dataset, part_split)
            print(f"ensemble: the {name} part, reused from {part_run.path}", flush=True)
        else:
            budget = part.train.time_budget_seconds
            print(f"ensemble: training the {name} part ({part.model.item_tower.type} item tower"
                  + (f", {budget:.0f} s budget" if budget else "")
                  + (", without the pseudo-cold items" if name == CALIBRATION_PART else "") + ")", flush=True)
            parts[name] = train(part, dataset, part_run.path, split=part_split, verbose=verbose,
                                evaluate_test=False, track_test=track_test and name != CALIBRATION_PART,
                                strategy=strategy)
        seconds[name] = time.perf_counter() - began
        validation = parts[name].metrics.get("validation", {})
        print(f"ensemble: {name} part: {parts[name].metrics.get('epochs')} epochs, validation NDCG@10 "
              f"{validation.get('val_ndcg10', float('nan')):.4f} ({seconds[name]:.0f} s)", flush=True)

    configs = part_configs(config)
    for name in PARTS:
        train_part(name, configs[name], split)
        split = split if split is not None else parts[name].split
    recipe = RetrievalRecipe(config, dataset, split)
    recipe.prepare(run)
    for name in PARTS:  # one score space needs one item index (the calibration part only scores a split)
        result = parts[name]
        if list(result.vocabulary.item_ids) != list(recipe.vocabulary.item_ids):
            raise RunError(f"{result.output_dir}: the {name} part was trained on another split's items than this "
                           f"run's; delete {result.output_dir} to train it again")
    pseudo_cold = cold_start_split(split, config.model.item_tower.pseudo_cold_fraction, seed=config.seed,
                                   stage="validation")
    if config.model.item_tower.new_item_calibration == "held_out":
        text = configs["text"]
        train_part(CALIBRATION_PART, dataclasses.replace(
            text, train=dataclasses.replace(text.train, refit_with_validation=False)), pseudo_cold.split)
    final_and_selected = {name: retrievers(result) for name, result in parts.items()}  # loads `best` once
    selected = {name: pair[1] for name, pair in final_and_selected.items()}
    fitted = fit_combination(selected["id"], selected["text"], recipe.split, pseudo_cold,
                             new_items=selected.get(CALIBRATION_PART))
    combination = {k: fitted[k] for k in ("text_weight", "new_item_scale", "new_item_offset")}
    finals = {name: final_and_selected[name][0] for name in PARTS}
    final_combination, moved = combination, None
    if any(finals[name].model is not selected[name].model for name in PARTS):  # refit: scales of their own
        final_combination, moved = moved_combination(combination, selected, finals, recipe.split)

    def ensemble(id_model, text_model, fitted_combination):
        model = EnsembleRetrievalModel(id_model, text_model, name="retrieval").build_weights()
        model.set_combination(**fitted_combination)
        return model

    model = ensemble(parts["id"].model, parts["text"].model, final_combination)
    ensemble(selected["id"].model, selected["text"].model, combination).save_weights(run.checkpoint("best"))
    model.save_weights(run.checkpoint("final"))
    run.save_model_config(model)
    id_metrics = parts["id"].metrics
    metrics = {
        "validation": fitted["validation"], "combination": final_combination, "calibration": fitted,
        "selection_combination": combination, "refit_transfer": moved,
        "best_epoch": id_metrics.get("best_epoch"), "epochs": id_metrics.get("epochs"),
        "train_seconds": sum(p.metrics.get("train_seconds", 0.0) for p in parts.values()),
        "sequences_per_second": id_metrics.get("sequences_per_second", float("nan")),
        "parts": {name: {"run": os.path.relpath(p.output_dir, run.path), "seconds": seconds[name],
                         "validation": p.metrics.get("validation"), "epochs": p.metrics.get("epochs")}
                  for name, p in parts.items()},
    }
    metrics["calibration"]["new_item_calibration"] = config.model.item_tower.new_item_calibration
    if evaluate_test:
        metrics["test"] = recipe.test_metrics(model)
    with open(run.metrics_file, "w") as handle:
        json.dump(metrics, handle, indent=2)
    for name in ("history_file", "curves_file"):  # the id part's curves stand for the run's
        source = getattr(RunDirectory(parts["id"].output_dir), name)
        if os.path.isfile(source):
            import shutil

            shutil.copyfile(source, getattr(run, name))
    # The combination, always (the parts' Keras output follows `verbose`).
    print(f"ensemble: text weight {combination['text_weight']:g}, new items {combination['new_item_scale']:g} "
          f"x text score {combination['new_item_offset']:+.3f}"
          + ("" if moved is None else f" (refit scale: text weight {final_combination['text_weight']:.3g}, new items "
             f"{final_combination['new_item_scale']:.3g} x text score {final_combination['new_item_offset']:+.3f})")
          + f" (validation NDCG@10 "
          f"{fitted['validation']['val_ndcg10']:.4f}; pseudo-cold calibration "
          f"{fitted['pseudo_cold']['cold_to_warm']:.2f})", flush=True)
    return TrainResult(model, config, metrics, output_dir, recipe)


def _score_matrix(retriever, split, users, histories) -> np.ndarray:
    from tfrec_attn.evaluation.retrieval import ROWS

    score = retriever.scorer(split)
    return np.concatenate([np.asarray(score(users[s:s + ROWS], histories[s:s + ROWS]), np.float32)
                           for s in range(0, len(users), ROWS)])


def _top(scores, histories, allowed, k):
    """Each user's ``k`` best scores among ``allowed`` items, history excluded, best first
    ([users, k]; -inf where fewer)."""
    from tfrec_attn.evaluation.protocol import without_history

    masked = np.where(allowed[np.newaxis, :], without_history(scores, histories), -np.inf)
    k = min(k, masked.shape[1])
    top = -np.partition(-masked, k - 1, axis=1)[:, :k]
    return -np.sort(-top, axis=1)


def new_item_offset(known_top, new_top, target_is_new, k: int = 10, iterations: int = 40) -> float:
    """The offset ``b`` at which the new items' top scores ``new_top + b`` (each user's best
    new items, [users, k], best first) take, in the merged top ``k`` with the known items'
    ``known_top``, as many places per wanted item as the known items do (calibration 1)."""
    users = len(known_top)
    wanted_new = float(np.sum(target_is_new))
    wanted_known = users - wanted_new
    if not users or not wanted_new or not wanted_known:
        return 0.0
    finite = np.concatenate([known_top[np.isfinite(known_top)], new_top[np.isfinite(new_top)]])
    lo, hi = -2.0 * np.ptp(finite) - 1.0, 2.0 * np.ptp(finite) + 1.0
    lo += float(np.min(known_top[np.isfinite(known_top)], initial=0.0)) - float(np.max(new_top, initial=0.0))
    hi += float(np.max(known_top, initial=0.0)) - float(np.min(new_top[np.isfinite(new_top)], initial=0.0))

    def ratio(b):
        # The c-th best new item enters the top k when it beats the known item at place k - c.
        new_shown = sum(int(np.sum(new_top[:, c - 1] + b > known_top[:, k - c])) for c in range(1, k + 1))
        return (new_shown / wanted_new) / max((users * k - new_shown) / wanted_known, 1e-12)

    for _ in range(iterations):
        middle = 0.5 * (lo + hi)
        lo, hi = (middle, hi) if ratio(middle) < 1.0 else (lo, middle)
    return float(0.5 * (lo + hi))


def score_transfer(source, target) -> tuple[float, float]:
    """``(scale, shift)`` such that ``scale * source + shift`` has the mean and spread of
    ``target``: two models' scores of the same (user, item) pairs, here the text part's and its
    held-out copy's over the items both trained on. Two trainings put their scores on scales
    of their own (ML-100K: means 2.58 and 1.35), so an offset fitted on the copy's scores moves
    to the text part's through this map."""
    source, target = np.asarray(source, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    spread = source.std()
    scale = target.std() / spread if spread > 0 else 1.0
    return float(scale), float(target.mean() - scale * source.mean())


def moved_combination(combination: dict, selected: dict, finals: dict, split) -> tuple[dict, dict]:
    """The combination fitted on the parts' selection checkpoints (``selected``), moved to
    their refit models (``finals``; both dicts of Retrievers by part name), and the map that
    moved it.

    A refit trains each part anew, on train + validation, and puts its scores on a scale of
    its own (:func:`score_transfer`); a text weight fitted on the selection checkpoints'
    scales would weigh the refit text part more or less than validation chose. Each part's
    final scores map to its selection scores, ``s_sel ~ a · s_final + c`` (fitted on the
    validation histories, which both score), and the combination follows the map:

    * known items, ``s_id + w s_text`` in the selection scale, are, over ``a_id``,
      ``s_id' + (w a_text / a_id) s_text'`` plus a constant;
    * new items, ``A s_text + B``, are ``(A a_text / a_id) s_text' + (A c_text + B - c_id -
      w c_text) / a_id`` after the same constant,

    so known and new items compete in the refit ensemble as they did in the fitted one."""
    from tfrec_attn.evaluation.protocol import Evaluator

    evaluator = Evaluator(split, "validation", num_negatives=0)
    users, histories = evaluator.users, evaluator.histories
    maps = {name: score_transfer(_score_matrix(finals[name], split, users, histories),
                                 _score_matrix(selected[name], split, users, histories)) for name in PARTS}
    transfer = {name: {"scale": a, "shift": c} for name, (a, c) in maps.items()}
    return move_combination(combination, transfer), transfer


def move_combination(combination: dict, transfer: dict) -> dict:
    """``combination`` through the parts' score maps ``transfer`` (``{"id": {"scale": a,
    "shift": c}, "text": ...}``, selection = a · final + c; :func:`moved_combination`)."""
    (a_id, c_id), (a_text, c_text) = ((transfer[name]["scale"], transfer[name]["shift"]) for name in PARTS)
    w, scale, offset = (combination[k] for k in ("text_weight", "new_item_scale", "new_item_offset"))
    return {"text_weight": w * a_text / a_id, "new_item_scale": scale * a_text / a_id,
            "new_item_offset": (scale * c_text + offset - c_id - w * c_text) / a_id}


def fit_combination(id_retriever, text_retriever, split, pseudo_cold, *, new_items=None, k: int = 10,
                    text_weights=TEXT_WEIGHTS, new_item_scales=NEW_ITEM_SCALES) -> dict:
    """The combination (``text_weight``, ``new_item_scale``, ``new_item_offset``) fitted on
    the validation stage (module docstring), with the figures that chose it: ``validation``
    (the ensemble's NDCG@10 etc. over known items of ``split``), ``pseudo_cold`` (the
    calibration and NDCG@10 of the chosen new-item score on ``pseudo_cold``, a
    :class:`~tfrec_attn.evaluation.cold_start.ColdStartSplit` of ``split``'s validation stage),
    ``weights`` and ``scales`` (the validation NDCG@10 of each candidate).

    ``new_items``: the Retriever whose text scores the pseudo-cold items (the text part trained
    without them); None: the text part's own (in sample)."""
    from tfrec_attn.evaluation.cold_start import calibration, top_k_appearances
    from tfrec_attn.evaluation.protocol import Evaluator, full_ranking_metrics
    from tfrec_attn.training.retrieval import LOG_NAMES

    def validation(on):
        evaluator = Evaluator(on, "validation", num_negatives=0)
        return evaluator.users, evaluator.histories, evaluator.targets

    def ndcg(scores, histories, targets):
        return float(np.mean(full_ranking_metrics(scores, targets, histories)["NDCG@10"]))

    users, histories, targets = validation(split)
    s_id = _score_matrix(id_retriever, split, users, histories)
    s_text = _score_matrix(text_retriever, split, users, histories)
    by_weight = {w: ndcg(s_id + w * s_text, histories, targets) for w in text_weights}
    weight = max(text_weights, key=lambda w: (by_weight[w], -w))
    best = full_ranking_metrics(s_id + weight * s_text, targets, histories)
    result = {"text_weight": weight, "weights": {str(w): v for w, v in by_weight.items()},
              "validation": {"val_" + short: float(np.mean(best[name])) for name, short in LOG_NAMES.items()}}

    # The new-item score, on the pseudo-cold split: its histories lack the pseudo-cold items.
    cold = pseudo_cold.split
    users, histories, targets = validation(cold)
    s_text = _score_matrix(text_retriever, cold, users, histories)
    known_scores = _score_matrix(id_retriever, cold, users, histories) + weight * s_text
    vocabulary = id_retriever.vocabulary
    is_new = ~vocabulary.is_item(vocabulary.model_indices(cold.item_vocab))
    is_new[pseudo_cold.cold_items] = True  # scored by their text alone
    scale_shift = (1.0, 0.0)  # the new-item scores' text score = scale * the text part's + shift
    s_new = s_text
    if new_items is not None:
        s_new = _score_matrix(new_items, cold, users, histories)
        scale_shift = score_transfer(s_text[:, ~is_new], s_new[:, ~is_new])
    target_is_new = is_new[targets]
    known_top = _top(known_scores, histories, ~is_new, k)
    by_scale, offsets = {}, {}
    for scale in new_item_scales:
        new_top = _top(scale * s_new, histories, is_new, k)
        offsets[scale] = float(new_item_offset(known_top, new_top, target_is_new, k))
        scores = np.where(is_new[np.newaxis, :], scale * s_new + offsets[scale], known_scores)
        by_scale[scale] = ndcg(scores, histories, targets)
    scale = max(new_item_scales, key=lambda a: (by_scale[a], -a))
    scores = np.where(is_new[np.newaxis, :], scale * s_new + offsets[scale], known_scores)
    shown_new, shown = top_k_appearances(scores, histories, is_new, k)
    per_user = full_ranking_metrics(scores, targets, histories)["NDCG@10"]
    transfer, shift = scale_shift  # a * (transfer * s_text + shift) + b, in the text part's score space
    result.update(
        new_item_scale=scale * transfer, new_item_offset=scale * shift + offsets[scale],
        transfer={"scale": transfer, "shift": shift},
        scales={str(a): {"val_ndcg10": v, "offset": offsets[a]} for a, v in by_scale.items()},
        pseudo_cold={**calibration(shown_new, shown - shown_new, target_is_new, k),
                     "items": int(is_new.sum()), "val_ndcg10": by_scale[scale],
                     "cold_ndcg10": float(np.mean(per_user[target_is_new])) if target_is_new.any() else float("nan"),
                     "warm_ndcg10": float(np.mean(per_user[~target_is_new]))})
    return result
