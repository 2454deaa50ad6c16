"""The main job's ranking stage: train the target-attention ranker on the retrieval model's
candidates, the rating table, the exports, and the candidates x history heatmap read from
the served ranking model."""

from __future__ import annotations

import os

import numpy as np


def train_ranking_stage(config, dataset, split, retrieval_config, trained, output_dir: str, verbose: int = 0):
    """Trains the ranking recipe with the in-memory retrieval model (test candidates) and its
    selection checkpoint (validation candidates, hard negatives); returns the TrainResult."""
    from tfrec_attn.training.ranking import run_retrievers, train_ranking

    final, selection = run_retrievers(trained.output_dir, retrieval_config, dataset, split, trained.vocabulary,
                                      trained.model)
    return train_ranking(config, dataset, os.path.join(output_dir, "ranking"), verbose=verbose, split=split,
                         retrieval=final, selection_retrieval=selection)


def rating_table(split, test_metrics: dict) -> dict:
    """RMSE / MAE of the ranker's rating head on the test events beside the biased baseline
    (global mean + user + item biases) and the global mean, fitted on the same training part."""
    from tfrec_attn.baselines import BiasedBaseline
    from tfrec_attn.data import Interactions
    from tfrec_attn.evaluation.rating import rating_metrics

    users = np.repeat(np.arange(split.num_users), [len(s) for s in split.train_sequences(True)])
    items = np.concatenate(split.train_sequences(True))
    ratings = np.concatenate(split.train_part("ratings", True))
    train = Interactions.from_rows(users.astype(str), items.astype(str), np.zeros(len(items)), ratings)
    test_users = split.evaluated
    actual = np.array([split.ratings[u][-1] for u in test_users], np.float32)
    targets = split.targets("test")
    rows = {}
    if not np.isfinite(actual).any() or not np.isfinite(ratings).any():
        return rows
    baseline = BiasedBaseline().fit(train)
    rows["biased baseline (mean + user + item bias)"] = rating_metrics(
        baseline.predict(test_users.astype(str), targets.astype(str)), actual)
    mean = float(np.nanmean(ratings))
    rows["global mean"] = rating_metrics(np.full(len(actual), mean, np.float32), actual)
    if "RMSE" in test_metrics:
        rows["attention ranker (rating head)"] = {"RMSE": test_metrics["RMSE"], "MAE": test_metrics["MAE"],
                                                  "count": int(np.isfinite(actual).sum())}
    return rows


def write_models_config(export_base: str, names) -> str:
    """``export_base/models.config``: TF Serving's model_config_list serving ``names``."""
    path = os.path.join(export_base, "models.config")
    entries = "\n".join(f'  config {{ name: "{name}" base_path: "{os.path.abspath(os.path.join(export_base, name))}" '
                        f'model_platform: "tensorflow" }}' for name in names)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"model_config_list {{\n{entries}\n}}\n")
    return path


def heatmap_from_server(client, history, candidates, dataset, path: str, last: int = 30) -> str:
    """The served ranking model's target attention (its ``explain`` signature, over gRPC) of
    ``candidates`` over the user's ``last`` most recent history items (the ranker's
    ``model.max_len``: what it reads), as a heatmap PNG."""
    from tfrec_attn.app.plots import attention_heatmap

    recent = list(history)[-last:]
    out = client.predict({"history": np.array([recent], object), "candidates": np.array([candidates], object)},
                         "explain")
    weights = out["attention"][0]
    return attention_heatmap(weights, [dataset.item_title(c) for c in candidates],
                             [dataset.item_title(h) for h in recent], path,
                             title="Ranking model: each candidate's target attention over the history (DIN)")
