#!/usr/bin/env python
"""Cold-start benchmark (results go to docs/benchmarks.md by hand).

    python tools/bench_cold_start.py --seeds 42 7 1 --towers ensemble id [--set k=v ...]
    python tools/bench_cold_start.py --interactions ../shared/data/amazon-scientific/interactions.csv \
        --items ../shared/data/amazon-scientific/items.csv --towers ensemble id

An ``ensemble`` run (the one model: an id part and a text part trained apart, scores added,
new items placed by the calibrated text score) also gives the rows of its two parts alone,
from the same training. Besides the cold and warm figures, each row has the warm users'
NDCG@10 without the cold items in the catalogue and the calibration (cold / warm top-10
appearances per wanted item).

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


COLUMNS = [f"{part}_{m}" for part in ("cold", "warm") for m in METRICS] + ["warm_wo_cold_NDCG@10", "cold_to_warm"]


def row(name, seed, result, seconds=None):
    return {"name": name, "seed": seed, "seconds": seconds,
            **{f"{part}_{m}": result[part][m] for part in ("cold", "warm") for m in METRICS},
            "warm_wo_cold_NDCG@10": result["warm_without_cold"]["NDCG@10"],
            "cold_to_warm": result["calibration"]["cold_to_warm"], "calibration": result["calibration"],
            "cold_users": result["cold"]["users"], "warm_users": result["warm"]["users"]}


def table(rows) -> str:
    head = ("| model | seed | cold HR@10 | cold NDCG@10 | cold HR@50 | warm HR@10 | warm NDCG@10 | warm HR@50 | "
            "warm NDCG@10 w/o cold | cold/warm top-10 rate | train s |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(r["name"] for r in rows))
    for name in names:
        group = [r for r in rows if r["name"] == name]
        for r in group:
            cells = " | ".join(f"{r[c]:.4f}" for c in COLUMNS)
            lines.append(f"| {name} | {r['seed']} | {cells} | {r['seconds'] or 0:.0f} |")
        if len(group) > 1:
            def ms(key, group=group):
                values = [r[key] for r in group]
                return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
            cells = " | ".join(ms(c) for c in COLUMNS)
            lines.append(f"| **{name} mean ± sd** | {len(group)} | {cells} | |")
    return "\n".join(lines)


def in_sample_row(config, data, cold, out, result, features, seed, seconds):
    """The same ensemble with its new-item score fitted in sample (on the text part's own scores
    of the pseudo-cold items, which it trained on): what ``held_out`` calibration changes."""
    from tfrec_attn.evaluation import cold_start_split
    from tfrec_attn.training.ensemble import PARTS, fit_combination, move_combination
    from tfrec_attn.training.retrieval import retrievers
    from tfrec_attn.training.run_dir import RunDirectory

    selected = {name: retrievers(RunDirectory(os.path.join(out, "parts", name)).load(data, cold.split))[1]
                for name in PARTS}
    pseudo = cold_start_split(cold.split, config.model.item_tower.pseudo_cold_fraction, seed=config.seed,
                              stage="validation")
    fitted = fit_combination(selected["id"], selected["text"], cold.split, pseudo)
    combination = {k: fitted[k] for k in ("text_weight", "new_item_scale", "new_item_offset")}
    if result.metrics.get("refit_transfer"):  # refit parts: their own scales, as the run's combination
        combination = move_combination(combination, result.metrics["refit_transfer"])
    return combination_row("ensemble, in-sample calibration", cold, result, features, combination, seed, seconds)


def untransferred_row(data, cold, result, features, seed, seconds):
    """The same ensemble with the held-out copy's offset applied to the text part's scores as it
    is, without moving it to their scale (:func:`tfrec_attn.training.ensemble.score_transfer`)."""
    from tfrec_attn.training.ensemble import move_combination

    fitted = result.metrics.get("selection_combination", result.metrics["combination"])
    transfer = result.metrics["calibration"]["transfer"]
    scale = fitted["new_item_scale"] / transfer["scale"]
    combination = {"text_weight": fitted["text_weight"], "new_item_scale": scale,
                   "new_item_offset": fitted["new_item_offset"] - scale * transfer["shift"]}
    if result.metrics.get("refit_transfer"):  # refit parts: their own scales, as the run's combination
        combination = move_combination(combination, result.metrics["refit_transfer"])
    return combination_row("ensemble, held out without the score transfer", cold, result, features, combination,
                           seed, seconds)


def combination_row(name, cold, result, features, combination, seed, seconds):
    """The protocol's row of ``result``'s ensemble with another ``combination`` (its own is put
    back afterwards)."""
    from tfrec_attn.evaluation import evaluate_cold_start
    from tfrec_attn.evaluation.retrieval import catalogue_scorer

    model = result.model
    model.set_combination(**combination)
    try:
        figures = evaluate_cold_start(cold, catalogue_scorer(model, result.vocabulary, cold.split,
                                                             item_features=features))
    finally:
        model.set_combination(**result.metrics["combination"])
    return {**row(name, seed, figures, seconds), "combination": combination}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("TFREC_ATTN_DATA",
                                                         os.path.join(ROOT, "..", "shared", "data", "ml-100k")))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1], help="model seeds")
    parser.add_argument("--interactions", help="generic interactions CSV instead of --data (e.g. amazon-scientific)")
    parser.add_argument("--items", help="its items CSV")
    parser.add_argument("--towers", nargs="+", default=["ensemble", "id"], choices=("id", "text", "hybrid", "ensemble"))
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

    if args.interactions:
        from tfrec_attn.data import load_dataset

        data = load_dataset(None, interactions=args.interactions, items=args.items)
    else:
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
            models = {f"{tower} item tower": result.model}
            if tower == "ensemble":  # its parts alone, from the same training
                models.update({"its id part alone": result.model.id_model, "its text part alone":
                               result.model.text_model})
                print(f"combination: {json.dumps(result.metrics['combination'])}; pseudo-cold calibration "
                      f"{result.metrics['calibration']['pseudo_cold']['cold_to_warm']:.2f}", flush=True)
            for name, model in models.items():
                item_features = features if model.item_tower.reads_text else None
                scorer = catalogue_scorer(model, result.vocabulary, cold.split, item_features=item_features)
                rows.append(row(name, seed, evaluate_cold_start(cold, scorer), seconds))
                if tower == "ensemble":
                    rows[-1]["combination"] = result.metrics["combination"]
                print(table(rows[-1:]), flush=True)
            if tower == "ensemble" and config.model.item_tower.new_item_calibration == "held_out":
                rows.append(in_sample_row(config, data, cold, out, result, features, seed, seconds))
                rows.append(untransferred_row(data, cold, result, features, seed, seconds))
                print(table(rows[-2:]), flush=True)
    print(table(rows))
    with open(args.out, "a") as handle:
        for r in rows:
            handle.write(json.dumps({"overrides": args.set, "split": cold.summary(), "data": data.name,
                                     "date": time.strftime("%Y-%m-%d"), **r}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
