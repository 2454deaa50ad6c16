#!/usr/bin/env python
"""The id + text ensemble on MovieLens 100K or a CSV data set: what its combination and its
parts each give (results go to docs/benchmarks.md by hand).

    python tools/bench_ensemble.py --seeds 42 7 1 [--work-dir runs/bench_ensemble] [--set k=v ...]
    python tools/bench_ensemble.py --interactions ../shared/data/amazon-scientific/interactions.csv \
        --items ../shared/data/amazon-scientific/items.csv --seeds 42 7 1

Trains the main job's retrieval tower (``training/configs/ml100k_retrieval.yaml`` with
``model.item_tower.type=ensemble``, ``model.item_tower.projection=mlp``, plus ``--set``) for
each seed (finished parts in ``WORK/ens-SEED/parts`` are reused) and prints, as JSON lines,
its validation metrics, the combination fitted on the selection checkpoints and the one moved
to the refit parts (:func:`tfrec_attn.training.ensemble.moved_combination`), and test HR@10 /
NDCG@10 / HR@50 (full ranking) of: the run's model (moved), the same final parts with the
unmoved combination, and each part alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import tfrec_attn  # noqa: F401  (before TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml")
TOWER = ["model.item_tower.type=ensemble", "model.item_tower.projection=mlp"]
KEYS = ("HR@10", "NDCG@10", "HR@50")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "ml-100k"))
    parser.add_argument("--interactions", help="a CSV data set's interactions (instead of --data)")
    parser.add_argument("--items", help="its items CSV (the texts the text part reads)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1])
    parser.add_argument("--work-dir", default="runs/bench_ensemble")
    parser.add_argument("--set", action="append", default=[], help="config override")
    args = parser.parse_args(argv)

    from tfrec_attn.config import load_config
    from tfrec_attn.data import load_dataset
    from tfrec_attn.evaluation.retrieval import evaluate_model
    from tfrec_attn.training import train

    data = load_dataset(args.data, interactions=args.interactions, items=args.items, download=False)
    for seed in args.seeds:
        config = load_config(CONFIG, TOWER + args.set + [f"seed={seed}"])
        began = time.perf_counter()
        result = train(config, data, os.path.join(args.work_dir, f"ens-{seed}"), verbose=0)
        metrics, recipe, model = result.metrics, result.recipe, result.model
        row = {"seed": seed, "seconds": time.perf_counter() - began, "validation": metrics["validation"],
               "selection_combination": metrics["selection_combination"], "combination": metrics["combination"],
               "refit_transfer": metrics["refit_transfer"],
               "test": {k: metrics["test"][k] for k in KEYS}}
        model.set_combination(**metrics["selection_combination"])
        try:
            unmoved = recipe.test_metrics(model)
        finally:
            model.set_combination(**metrics["combination"])
        row["test_unmoved"] = {k: unmoved[k] for k in KEYS}
        for part in ("id", "text"):
            alone = evaluate_model(getattr(model, f"{part}_model"), recipe.vocabulary, recipe.split, "test",
                                   item_features=recipe.item_features, item_texts=recipe.item_texts)
            row[f"test_{part}_part"] = {k: alone[k] for k in KEYS}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
