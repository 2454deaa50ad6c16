#!/usr/bin/env python
"""Probe: give cold items an id embedding predicted from their text, instead of the OOV row.

    python tools/bench_cold_start.py --seeds 42 --towers id hybrid --set train.refit_with_validation=false \
        --work-dir /tmp/tfrec_attn_cold
    python tools/probe_cold_mapping.py /tmp/tfrec_attn_cold/id-42 /tmp/tfrec_attn_cold/hybrid-42

For a model trained on the cold-start protocol's split (never seeing the cold items), a
ridge regression from the MiniLM text features of the known items to their learned id
embeddings predicts an id embedding for each cold item (times a ``scale``: ridge shrinks
towards the mean). A hybrid model adds its text projection, as for any item. This is the
"meta-embedding" family of cold-start methods, applied after training.

Choosing ``alpha`` and ``scale`` must not look at the cold items: the **validation** rows
hold out a seeded 20% of the known items ("pseudo-cold": their id rows are replaced by the
prediction of a ridge fitted on the other 80%) and score the validation targets of users
whose target is pseudo-cold and of the others. The **test** rows use every known item for
the fit and score the protocol's cold and warm test users.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import tfrec_attn  # noqa: F401  (before TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ridge(features, targets, alpha):
    """x -> (x - mean) W + mean(targets), W the ridge solution on centred data."""
    mean_x, mean_y = features.mean(0), targets.mean(0)
    centred = features - mean_x
    weights = np.linalg.solve(centred.T @ centred + alpha * np.eye(features.shape[1]), centred.T @ (targets - mean_y))
    return lambda x: (x - mean_x) @ weights + mean_y


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories trained on the cold-start split")
    parser.add_argument("--data", default=os.environ.get("TFREC_ATTN_DATA",
                                                         os.path.join(ROOT, "..", "shared", "data", "ml-100k")))
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    args = parser.parse_args(argv)

    from tfrec_attn.data import read_movielens
    from tfrec_attn.data.splits import leave_one_out
    from tfrec_attn.evaluation import cold_start_split

    data = read_movielens(args.data)
    cold = cold_start_split(leave_one_out(data.interactions), 0.2, seed=0)
    print("| run | rows | alpha | scale | cold HR@10 | cold NDCG@10 | cold HR@50 | warm HR@10 | warm NDCG@10 | "
          "warm HR@50 |\n|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        probe(run, data, cold, args)
    return 0


def probe(run, data, cold, args) -> None:
    """The validation and test rows of one run directory."""
    import tensorflow as tf

    from tfrec_attn.evaluation import evaluate_cold_start
    from tfrec_attn.evaluation.protocol import Evaluator
    from tfrec_attn.evaluation.retrieval import catalogue_scorer
    from tfrec_attn.training import RunDirectory
    from tfrec_attn.training.retrieval import catalogue_text_features

    split = cold.split
    loaded = RunDirectory(run).load()
    config, vocabulary, model = loaded.config, loaded.vocabulary, loaded.model
    features = catalogue_text_features(config if config.model.item_tower.reads_text else _text_config(config),
                                       data, split, progress=False)
    tower = model.item_tower
    table = tower.embedding if hasattr(tower, "embedding") else tower.id_embedding
    original = table.embeddings.numpy().copy()
    to_model = vocabulary.model_indices(split.item_vocab)
    known = vocabulary.is_item(to_model)
    project = getattr(tower, "project", None)

    def text_part(x):
        return project(tf.constant(x, tf.float32)).numpy() if project is not None else 0.0

    def row(stage, alpha, scale, result):
        cells = " | ".join(f"{result[p][m]:.4f}" for p in result for m in ("HR@10", "NDCG@10", "HR@50"))
        print(f"| {os.path.basename(run)} | {stage} | {alpha} | {scale} | {cells} |", flush=True)

    # validation: a seeded 20% of the known items play the cold items
    rng = np.random.default_rng(0)
    held = rng.choice(np.flatnonzero(known), size=int(known.sum()) // 5, replace=False)
    is_held = np.zeros(len(known), bool)
    is_held[held] = True
    fit = known & ~is_held
    pseudo_cold = is_held[split.targets("validation")]
    groups = {"cold": split.evaluated[pseudo_cold], "warm": split.evaluated[~pseudo_cold]}
    scorer = catalogue_scorer(model, vocabulary, split, item_features=features)
    for alpha in [None, *args.alphas]:
        for scale in [1.0] if alpha is None else args.scales:
            rows = to_model[held]
            new = original.copy()
            new[rows] = (np.tile(original[1], (len(rows), 1)) if alpha is None else
                         ridge(features[fit], original[to_model[fit]], alpha)(features[held]) * scale)
            table.embeddings.assign(new)
            row("validation (pseudo-cold)", alpha or "OOV row", scale if alpha else "-",
                {p: Evaluator(split, "validation", users=u).evaluate(scorer, sampled=False)
                 for p, u in groups.items()})
    table.embeddings.assign(original)
    # test: the protocol's cold items get the prediction of a ridge fitted on every known item
    tower.text_dim = features.shape[1]  # an id tower reads the text features here only
    for alpha in [None, *args.alphas]:
        for scale in [1.0] if alpha is None else args.scales:
            mapping = None if alpha is None else ridge(features[known], original[to_model[known]], alpha)

            def new_item_vectors(x, mapping=mapping, scale=scale):
                x = np.asarray(x)
                ids = np.tile(original[1], (len(x), 1)) if mapping is None else mapping(x) * scale
                return tf.constant((ids + text_part(x)).astype(np.float32))

            model.new_item_vectors = new_item_vectors
            row("test", alpha or "OOV row", scale if alpha else "-",
                evaluate_cold_start(cold, catalogue_scorer(model, vocabulary, split, item_features=features)))


def _text_config(config):
    """An id-tower run's config with the default text encoder (the features to map from)."""
    import dataclasses

    return dataclasses.replace(config, model=dataclasses.replace(
        config.model, item_tower=dataclasses.replace(config.model.item_tower, type="hybrid")))


if __name__ == "__main__":
    sys.exit(main())
