#!/usr/bin/env python
"""The u1 rating benchmark on MovieLens 100K: our ranking model's rating head beside the
biased baseline and the published figures (results go to docs/ by hand).

    python tools/bench_rating.py [--seeds 42 7 1] [--set train.time_budget_seconds=300 ...]
                                 [--json bench_rating.json] [--data DIR] [--fold 1]

The split is GroupLens' ``u1`` (``--fold``): ``u1.test`` = the first 20,000 lines of
``u.data``, ``u1.base`` = the other 80,000 (:func:`tfrec_attn.data.grouplens_fold`, derived,
not read). The biased baseline (global mean + user bias + item bias,
:class:`tfrec_attn.baselines.BiasedBaseline`) is fitted on ``u1.base``; our model is
:class:`tfrec_attn.training.rating.RatingRecipe` trained by the engine with
``training/configs/ml100k_rating.yaml`` + ``--set`` overrides, one run per seed, its epoch
(and config) chosen on a 5% hold-out of ``u1.base`` — ``u1.test`` is only measured.

One seed by default: a run takes about seven minutes on 2 CPU cores (13 epochs of ~30 s),
so seed variance is not measured unless ``--seeds`` asks for more (the table then adds
mean ± sd).

Published figures on u1 (RMSE / MAE): GLocal-K 0.8889 / 0.6950 (Han et al., CIKM 2021),
IGMC 0.905 (Zhang & Chen, ICLR 2020), GC-MC 0.910 (van den Berg et al., 2017); Surprise's
SVD++ 0.919 is a 5-fold cross-validation figure, for orientation only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time

import tfrec_attn  # noqa: F401  (before TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_rating.yaml")
TARGET = {"RMSE": 0.889, "MAE": 0.695}
PUBLISHED = [  # name, RMSE, MAE (None: not reported), protocol
    ("GLocal-K (CIKM 2021)", 0.8889, 0.6950, "u1"),
    ("IGMC (ICLR 2020)", 0.905, None, "u1"),
    ("GC-MC (2017)", 0.910, None, "u1"),
    ("SVD++ (Surprise)", 0.919, None, "5-fold CV, not u1"),
]


def machine() -> dict:
    import tensorflow as tf

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "gpus": len(tf.config.list_physical_devices("GPU")),
            "tensorflow": tf.__version__}


def benchmark(dataset, split, config_path: str | None = CONFIG, seeds=(42,), overrides=(),
              work_dir: str = "/tmp/tfrec_attn_rating", verbose: int = 0) -> dict:
    """The baseline and one trained model per seed on ``split``; a JSON-ready dict.

    Args:
        dataset: Dataset (item metadata, user features).
        split: RatingSplit (e.g. :func:`tfrec_attn.data.grouplens_fold`).
        config_path: str or None. The ranking config (None: defaults + ``overrides``).
        seeds: ints. One training run each.
        overrides: ``key=value`` strings applied to every run.
        work_dir: str. Run directories ``{work_dir}/seed{seed}`` (replaced).
    """
    from tfrec_attn.baselines.biased import biased_baseline_metrics
    from tfrec_attn.config import load_config
    from tfrec_attn.training import train

    began = time.perf_counter()
    result = {"split": split.name, "train_ratings": len(split.train), "test_ratings": len(split.test),
              "config": config_path, "overrides": list(overrides), "machine": machine(),
              "date": time.strftime("%Y-%m-%d"), "target": TARGET,
              "published": [{"name": n, "RMSE": r, "MAE": m, "protocol": p} for n, r, m, p in PUBLISHED],
              "baseline": biased_baseline_metrics(split.train, split.test.user_ids, split.test.item_ids,
                                                  split.test.ratings),
              "runs": []}
    for seed in seeds:
        config = load_config(config_path, [*overrides, f"seed={seed}"])
        out = os.path.join(work_dir, f"seed{seed}")
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        trained = train(config, dataset, out, split=split, verbose=verbose)
        m = trained.metrics
        result["runs"].append({
            "seed": seed, "RMSE": m["test"]["RMSE"], "MAE": m["test"]["MAE"], "count": m["test"]["count"],
            "oov_items": m["test"]["oov_items"], **m["validation"], "best_epoch": m["best_epoch"],
            "epochs": m["epochs"], "budget_hit": m["budget_hit"], "train_seconds": m["train_seconds"],
            "refit_seconds": m.get("refit_seconds"), "seconds": time.perf_counter() - start, "run_dir": out})
        if verbose and len(seeds) > 1:  # progress; main prints the final table
            print(table(result), flush=True)
    runs = result["runs"]
    if runs:
        summary = {k: statistics.mean(r[k] for r in runs) for k in ("RMSE", "MAE")}
        summary.update({f"{k}_sd": statistics.stdev(r[k] for r in runs) if len(runs) > 1 else None
                        for k in ("RMSE", "MAE")})
        summary["met_target"] = summary["RMSE"] <= TARGET["RMSE"] and summary["MAE"] <= TARGET["MAE"]
        result["ours"] = summary
    result["seconds"] = time.perf_counter() - began
    return result


def table(result: dict) -> str:
    """A Markdown table: ours (per seed, mean ± sd), the biased baseline, the published figures."""
    def cell(value):
        return "—" if value is None else f"{value:.4f}"

    lines = [f"| model ({result['split']}) | seed | RMSE | MAE | train s | protocol |", "|---|---|---|---|---|---|"]
    runs = result["runs"]
    for r in runs:
        lines.append(f"| ours: attention ranking model, rating head | {r['seed']} | {cell(r['RMSE'])} | "
                     f"{cell(r['MAE'])} | {r['seconds']:.0f} | {result['split']} |")
    if len(runs) > 1:
        ours = result["ours"]
        lines.append(f"| **ours, mean ± sd** | {len(runs)} | {ours['RMSE']:.4f} ± {ours['RMSE_sd']:.4f} | "
                     f"{ours['MAE']:.4f} ± {ours['MAE_sd']:.4f} | | {result['split']} |")
    base = result["baseline"]
    lines.append(f"| biased baseline (mean + b_u + b_i) | - | {cell(base['RMSE'])} | {cell(base['MAE'])} | | "
                 f"{result['split']} |")
    for p in result["published"]:
        lines.append(f"| {p['name']}, published | - | {cell(p['RMSE'])} | {cell(p['MAE'])} | | {p['protocol']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("TFREC_ATTN_DATA",
                                                         os.path.join(ROOT, "..", "shared", "data", "ml-100k")))
    parser.add_argument("--fold", type=int, default=1, help="GroupLens fold u1..u5 (u1: the benchmark)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42],
                        help="model seeds (default: one, for the CPU budget)")
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--set", action="append", default=[], help="config override for every run, key=value")
    parser.add_argument("--work-dir", default="/tmp/tfrec_attn_rating")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--verbose", type=int, default=2, help="Keras progress (0: silent)")
    args = parser.parse_args(argv)

    from tfrec_attn.data import grouplens_fold, read_movielens

    data = read_movielens(args.data)
    split = grouplens_fold(data.interactions, args.fold)
    result = benchmark(data, split, args.config, args.seeds, args.set, args.work_dir, args.verbose)
    result["command"] = " ".join(["python", "tools/bench_rating.py", *(argv if argv is not None else sys.argv[1:])])
    print(table(result))
    ours = result.get("ours")
    if ours:
        verdict = "meets" if ours["met_target"] else "misses"
        print(f"\nours {verdict} the target RMSE <= {TARGET['RMSE']} and MAE <= {TARGET['MAE']}; "
              f"{len(result['runs'])} seed(s), {result['seconds']:.0f} s in all on {result['machine']['cpus']} CPU(s), "
              f"{result['machine']['gpus']} GPU(s)")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
