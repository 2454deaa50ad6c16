#!/usr/bin/env python
"""Cold-start benchmark on MovieLens 100K (results go to docs/benchmarks.md by hand).

    python tools/bench_cold_start.py --seeds 42 7 1 --towers hybrid id [--set k=v ...]

The protocol (:mod:`tfrec_attn.evaluation.cold_start`): cold items = the test targets of
a seeded 20% of the evaluated users (seed 0, the same for every run); their interactions
are removed from training, validation and histories. Each model trains from scratch on
that split with ``training/configs/ml100k_retrieval.yaml`` + ``model.item_tower.type=T``
+ the overrides, and is scored on the cold test events and on the warm ones. The
content-only baseline (cosine between the candidate's MiniLM embedding and the mean of
the history's, no training) and MostPop are scored on the same split.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

import tfrec_attn  # noqa: F401  (before TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml")
METRICS = ("HR@10", "NDCG@10", "HR@50")


def row(name, seed, result, seconds=None):
    return {"name": name, "seed": seed, "seconds": seconds,
            **{f"{part}_{m}": result[part][m] for part in ("cold", "warm") for m in METRICS},
            "cold_users": result["cold"]["users"], "warm_users": result["warm"]["users"]}


def table(rows) -> str:
    head = "| model | seed | cold HR@10 | cold NDCG@10 | cold HR@50 | warm HR@10 | warm NDCG@10 | warm HR@50 | train s |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(r["name"] for r in rows))
    for name in names:
        group = [r for r in rows if r["name"] == name]
        for r in group:
            cells = " | ".join(f"{r[f'{p}_{m}']:.4f}" for p in ("cold", "warm") for m in METRICS)
            lines.append(f"| {name} | {r['seed']} | {cells} | {r['seconds'] or 0:.0f} |")
        if len(group) > 1:
            def ms(key, group=group):
                values = [r[key] for r in group]
                return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
            cells = " | ".join(ms(f"{p}_{m}") for p in ("cold", "warm") for m in METRICS)
            lines.append(f"| **{name} mean ± sd** | {len(group)} | {cells} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("TFREC_ATTN_DATA",
                                                         os.path.join(ROOT, "..", "shared", "data", "ml-100k")))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1], help="model seeds")
    parser.add_argument("--towers", nargs="+", default=["hybrid", "id"], choices=("id", "text", "hybrid"))
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--set", action="append", default=[], help="override for every trained model")
    parser.add_argument("--work-dir", default="/tmp/tfrec_attn_cold")
    parser.add_argument("--out", default="bench_cold_start.jsonl")
    args = parser.parse_args(argv)

    from tfrec_attn.baselines import ContentBaseline, MostPopBaseline
    from tfrec_attn.config import load_config
    from tfrec_attn.data import read_movielens
    from tfrec_attn.evaluation import cold_start_split, evaluate_cold_start
    from tfrec_attn.evaluation.retrieval import catalogue_scorer
    from tfrec_attn.training import train
    from tfrec_attn.training.retrieval import catalogue_text_features

    data = read_movielens(args.data)
    from tfrec_attn.data.splits import leave_one_out

    cold = cold_start_split(leave_one_out(data.interactions), args.fraction, seed=0)
    print(f"cold-start split: {cold.summary()}", flush=True)
    base_config = load_config(CONFIG, [])
    features = catalogue_text_features(base_config, data, cold.split)  # MiniLM, the config's encoder
    rows = [row("content (MiniLM cosine, no training)", "-",
                evaluate_cold_start(cold, ContentBaseline(features).score_fn())),
            row("MostPop", "-", evaluate_cold_start(cold, MostPopBaseline().fit(cold.split).score_fn()))]
    print(table(rows), flush=True)
    for tower in args.towers:
        for seed in args.seeds:
            config = load_config(CONFIG, [f"model.item_tower.type={tower}", f"seed={seed}", *args.set])
            out = os.path.join(args.work_dir, f"{tower}-{seed}")
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            result = train(config, data, out, verbose=0, split=cold.split, evaluate_test=False)
            seconds = time.perf_counter() - start
            item_features = features if tower != "id" else None
            scorer = catalogue_scorer(result.model, result.vocabulary, cold.split, item_features=item_features)
            rows.append(row(f"{tower} item tower", seed, evaluate_cold_start(cold, scorer), seconds))
            print(table(rows[-1:]), flush=True)
    print(table(rows))
    with open(args.out, "a") as handle:
        for r in rows:
            handle.write(json.dumps({"overrides": args.set, "split": cold.summary(),
                                     "date": time.strftime("%Y-%m-%d"), **r}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
