"""Two-stage evaluation: retrieval top-K -> the ranking model re-orders -> full-ranking protocol.

The final list is the retrieval model's top ``K`` candidates (the user's history excluded)
ordered by ``ranker score + retrieval_weight * retrieval score`` (the ranking model's
``retrieval_weight``, 0 = the ranker alone, chosen on validation), followed by the rest of the catalogue in retrieval order, so a
target outside the ``K`` candidates ranks below all of them (a miss for any cut-off <= K),
and the metrics are exactly the project's full-ranking protocol
(:class:`~tfrec_attn.evaluation.Evaluator`). Beside it:

* the retrieval model alone on the same users (``retrieval_*``), and the candidate recall
  (``recall@K``: share of targets among the candidates, the two-stage HR ceiling);
* ``AUC``: the ranker's score of the target against the protocol's sampled negatives
  (100 never-interacted items per user, fixed seed), ties counted half;
* ``RMSE`` / ``MAE``: the rating head's prediction for the target event vs its rating.
"""

from __future__ import annotations

import numpy as np

from tfrec_attn.evaluation.protocol import Evaluator, without_history
from tfrec_attn.evaluation.rating import rating_metrics
from tfrec_attn.evaluation.retrieval import Retriever

ROWS = 32  # users per ranker batch (fixed shapes: one trace per model)
OFFSET = 1e9  # non-candidates rank below every candidate
RETRIEVAL_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # candidates of the blend weight (chosen on validation)


def ranker_outputs(model, inputs: dict, candidates: np.ndarray) -> dict:
    """The ranking model's ``scores`` and ``rating`` ([n, C] numpy) for rows of network inputs
    (without candidates) and model-index ``candidates`` [n, C], in batches of fixed shape."""
    import tensorflow as tf

    n = len(candidates)
    scores = np.zeros(candidates.shape, np.float32)
    rating = np.zeros(candidates.shape, np.float32)
    for start in range(0, n, ROWS):
        stop = min(start + ROWS, n)
        batch = {k: _pad_rows(v[start:stop]) for k, v in inputs.items()}
        batch["candidates"] = _pad_rows(candidates[start:stop])
        out = model.predict_batch({k: tf.constant(v, tf.float32 if v.dtype.kind == "f" else tf.int64)
                                   for k, v in batch.items()})
        scores[start:stop] = out["scores"].numpy()[: stop - start]
        rating[start:stop] = out["rating"].numpy()[: stop - start]
    return {"scores": scores, "rating": rating}


def _pad_rows(values: np.ndarray) -> np.ndarray:
    if len(values) == ROWS:
        return values
    pad = np.zeros((ROWS - len(values),) + values.shape[1:], values.dtype)
    return np.concatenate([values, pad])


def auc(scores: np.ndarray) -> np.ndarray:
    """Per row, P(column 0 scores above a later column), ties counted half."""
    target = scores[:, :1]
    return np.mean((scores[:, 1:] < target) + 0.5 * (scores[:, 1:] == target), axis=1)


def evaluate_two_stage(recipe, model, stage: str, retrieval: Retriever | None = None, users=None,
                       num_candidates: int | None = None, choose_weight: bool = False) -> dict:
    """Metrics of a ranking recipe's model at ``stage`` (see the module docstring).

    Args:
        recipe: RankingRecipe (split, vocabulary, history features).
        model: RankingModel.
        stage: ``validation`` or ``test``.
        retrieval: Retriever or None (then only AUC and rating metrics).
        users: optional subset of ``split.evaluated``.
        num_candidates: K (default ``config.retrieval.candidates``).
        choose_weight: bool. Pick the model's ``retrieval_weight`` on this stage (validation
            only) from :data:`RETRIEVAL_WEIGHTS`, and set it.
    """
    split = recipe.split
    evaluator = Evaluator(split, stage, users=users)
    users = evaluator.users
    inputs = recipe.stage_inputs(stage, users)
    to_ranker = recipe.vocabulary.model_indices(split.item_vocab)
    position = {"validation": -2, "test": -1}[stage]
    metrics: dict = {"users": len(users)}

    # AUC vs the sampled negatives, and the rating of the target event.
    targets = evaluator.targets
    negatives = evaluator.negatives
    listed = targets[:, None] if negatives is None else np.concatenate([targets[:, None], negatives], axis=1)
    out = ranker_outputs(model, inputs, to_ranker[listed])
    if negatives is not None:
        metrics["AUC"] = float(np.mean(auc(out["scores"])))
    actual = np.array([split.ratings[u][position] for u in users], np.float32)
    if np.isfinite(actual).any():
        rated = rating_metrics(out["rating"][:, 0], actual)
        metrics.update(RMSE=rated["RMSE"], MAE=rated["MAE"])

    if retrieval is None:
        return metrics
    k = int(num_candidates or recipe.config.retrieval.candidates)
    scorer = retrieval.scorer(split)
    row_of = {int(u): i for i, u in enumerate(users)}
    batches: dict = {}  # first user of a batch -> (retrieval scores, candidates, ranker scores)

    def stage_one(batch_users, histories):
        key = int(batch_users[0])
        if key not in batches:
            scores = np.asarray(scorer(batch_users, histories), np.float64)
            masked = without_history(scores, histories)
            top = np.argpartition(-masked, min(k, scores.shape[1] - 1), axis=1)[:, :k]
            rows = np.array([row_of[int(u)] for u in batch_users])
            ranked = ranker_outputs(model, {name: v[rows] for name, v in inputs.items()}, to_ranker[top])["scores"]
            batches[key] = (scores, top, ranked.astype(np.float64), targets[rows])
        return batches[key]

    def two_stage(weight):
        def score(batch_users, histories):
            scores, top, ranked, _ = stage_one(batch_users, histories)
            final = scores - OFFSET
            blended = ranked + weight * np.take_along_axis(scores, top, axis=1)
            np.put_along_axis(final, top, blended, axis=1)
            return final
        return score

    weight = float(model.retrieval_weight.numpy())
    if choose_weight:
        results = {w: evaluator.evaluate(two_stage(w), sampled=False) for w in RETRIEVAL_WEIGHTS}
        weight = max(RETRIEVAL_WEIGHTS, key=lambda w: (results[w]["NDCG@10"], -w))
        model.retrieval_weight.assign(weight)
        metrics.update(results[weight])
    else:
        metrics.update(evaluator.evaluate(two_stage(weight), sampled=False))
    metrics["retrieval_weight"] = weight
    if weight:  # the ranker alone on the same candidates
        alone = evaluator.evaluate(two_stage(0.0), sampled=False)
        metrics.update({f"ranker_only_{name}": value for name, value in alone.items() if name != "users"})
    metrics[f"recall@{k}"] = float(np.mean(np.concatenate(
        [np.any(top == t[:, None], axis=1) for _, top, _, t in batches.values()])))
    alone = evaluator.evaluate(scorer, sampled=False)
    metrics.update({f"retrieval_{name}": value for name, value in alone.items() if name != "users"})
    return metrics


def comparison_rows(metrics: dict) -> dict:
    """``{row name: metrics}`` of a two-stage evaluation for ``format_table``: retrieval
    alone, the ranker alone on the retrieval candidates, and the two-stage order."""
    rows = {}
    for title, prefix in (("retrieval only", "retrieval_"), ("ranker only", "ranker_only_"), ("two-stage", "")):
        if prefix:
            row = {name[len(prefix):]: value for name, value in metrics.items() if name.startswith(prefix)}
        else:
            row = {name: value for name, value in metrics.items() if name in ("HR@10", "NDCG@10", "HR@50", "MRR")}
        if row:
            rows[title] = row
    return rows


def rating_rows(metrics: dict) -> dict:
    """``{row name: {"RMSE", "MAE", "count"}}`` of a ranking run's test metrics: the rating
    head beside the biased baseline and the global mean on the same test events."""
    if "baseline_RMSE" not in metrics:
        return {}
    count = metrics["rating_count"]
    return {"biased baseline (mean + user + item bias)": {"RMSE": metrics["baseline_RMSE"],
                                                          "MAE": metrics["baseline_MAE"], "count": count},
            "global mean": {"RMSE": metrics["mean_RMSE"], "MAE": metrics["mean_MAE"], "count": count},
            "attention ranker (rating head)": {"RMSE": metrics["RMSE"], "MAE": metrics["MAE"], "count": count}}
