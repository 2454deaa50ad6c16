#!/usr/bin/env python
"""Retrieval benchmarks on MovieLens 100K (results go to docs/benchmarks.md by hand).

    python tools/bench_retrieval.py quality --seeds 42 7 1 [--budget 0] [--set k=v ...]
    python tools/bench_retrieval.py curve --budget 240            # time-to-quality (+ PNG)
    python tools/bench_retrieval.py speed --epochs 6              # seq/s per efficiency option
    python tools/bench_retrieval.py ablation --budget 240         # one row per design choice
    python tools/bench_retrieval.py scale --epochs 2              # default config, 50x catalogue

Every run trains from scratch with ``training/configs/ml100k_retrieval.yaml`` plus the
given overrides, chooses the checkpoint on validation NDCG@10 and reports the test split
(full ranking, the project's protocol). Each result is appended as a JSON line to
``--out`` and printed as a Markdown table.
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
CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml")

ABLATIONS = {
    "default": [],
    "loss=full": ["loss.type=full"],
    "loss=sampled(256)": ["loss.type=sampled", "loss.num_negatives=256"],
    "loss=in_batch": ["loss.type=in_batch"],
    "temperature=1": ["loss.temperature=1.0"],
    "batch=128": ["train.batch_size=128"],
    "no tie re-shuffling": ["train.shuffle_ties=false"],
    "no sqrt(d) input scaling": ["model.scale_embeddings=false"],
    "post-LN": ["model.norm_first=false"],
    "max_len=50": ["model.max_len=50"],
    "max_len=100": ["model.max_len=100"],
    "d=32": ["model.embedding_dim=32"],
    "d=128": ["model.embedding_dim=128"],
    "blocks=1": ["model.num_blocks=1"],
    "blocks=3": ["model.num_blocks=3"],
    "heads=2": ["model.num_heads=2"],
    "dropout=0.2": ["model.dropout=0.2"],
    "dropout=0.5": ["model.dropout=0.5"],
}

SPEED = {
    "default (bucketed, float32, no XLA)": [],
    "no length bucketing": ["train.bucket_by_length=false"],
    "jit_compile (XLA, bucket-boundary padding)": ["train.jit_compile=true"],
    "mixed precision (bfloat16 on CPU)": ["train.mixed_precision=true"],
}


def machine() -> str:
    import tensorflow as tf

    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, TF {tf.__version__}, {time.strftime('%Y-%m-%d')}")


def run_one(name, overrides, seed, data, work, budget, track_test=False, verbose=0):
    from tfrec_attn.training.config import load_config
    from tfrec_attn.training.retrieval import train_retrieval

    sets = list(overrides) + [f"seed={seed}"]
    if budget:
        sets.append(f"train.time_budget_seconds={budget}")
    config = load_config(CONFIG, sets)
    out = os.path.join(work, f"{name.replace(' ', '_').replace('/', '_')}-{seed}")
    shutil.rmtree(out, ignore_errors=True)
    result = train_retrieval(config, data, out, verbose=verbose, track_test=track_test)
    m = result.metrics
    return {"name": name, "seed": seed, "overrides": sets, "run_dir": out,
            "validation_ndcg10": m["validation"].get("val_ndcg10"),
            "test": {k: m["test"][k] for k in ("HR@10", "NDCG@10", "HR@50", "MRR")},
            "epochs": m["epochs"], "best_epoch": m["best_epoch"], "train_seconds": m["train_seconds"],
            "sequences_per_second": m["sequences_per_second"]}


def epoch_seconds(run_dir):
    """(first epoch, steady seconds per epoch) from a run's epoch log; steady excludes the
    first epoch, which also traces the graph."""
    from tfrec_attn.training.engine import read_history

    elapsed = [row["elapsed"] for row in read_history(os.path.join(run_dir, "history.csv"))]
    return elapsed[0], (elapsed[-1] - elapsed[0]) / max(1, len(elapsed) - 1)


def table(rows, group=False):
    lines = ["| run | seed | val NDCG@10 | test HR@10 | test NDCG@10 | test HR@50 | test MRR | epochs (best) | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["test"]
        lines.append(f"| {r['name']} | {r['seed']} | {r['validation_ndcg10']:.4f} | {t['HR@10']:.4f} | "
                     f"{t['NDCG@10']:.4f} | {t['HR@50']:.4f} | {t['MRR']:.4f} | {r['epochs']} ({r['best_epoch']}) | "
                     f"{r['train_seconds']:.0f} |")
    if group and len(rows) > 1:
        def mean_sd(key):
            values = [r["test"][key] for r in rows]
            return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
        lines.append(f"| **mean ± sd** | {len(rows)} seeds | | {mean_sd('HR@10')} | {mean_sd('NDCG@10')} | "
                     f"{mean_sd('HR@50')} | {mean_sd('MRR')} | | |")
    return "\n".join(lines)


def speed(args, data):
    rows = []
    for name, overrides in SPEED.items():
        sets = overrides + [f"train.epochs={args.epochs}", "train.eval_every=100000", "train.patience=100000"]
        r = run_one(name, sets + args.set, 42, data, args.work_dir, 0)
        first, steady = epoch_seconds(r["run_dir"])
        users = r["sequences_per_second"] * r["train_seconds"] / r["epochs"]
        rows.append({**r, "first_epoch_seconds": first, "steady_epoch_seconds": steady,
                     "steady_sequences_per_second": users / steady})
        print(f"{name}: first epoch {first:.1f}s, steady {steady:.2f}s/epoch, "
              f"{users / steady:.0f} seq/s", flush=True)
    print("\n| option | first epoch (s) | steady s/epoch | sequences/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['first_epoch_seconds']:.1f} | {r['steady_epoch_seconds']:.2f} | "
              f"{r['steady_sequences_per_second']:.0f} |")
    return rows


def scale(args):
    """Time the default config on synthetic data with a catalogue 50x ML-100K's.

    Two shapes: ML-100K's users (943, ~106 items each) with 84,100 items (isolates the
    catalogue's cost), and a 1M-interaction data set (20,000 users x ~50 items). Reports
    seconds per epoch (training + the per-epoch full-ranking validation) and sequences/s.
    """
    from tfrec_attn.data.synthetic import popularity_sequences
    from tfrec_attn.training.config import load_config
    from tfrec_attn.training.retrieval import train_retrieval

    rows = []
    for name, users, mean_len in (("943 users x ~106 items, 84,100-item catalogue", 943, 106),
                                  ("20,000 users x ~50 items (1M interactions), 84,100 items", 20_000, 50)):
        data = popularity_sequences(args.catalogue, users, mean_len, seed=0)
        sets = [f"train.epochs={args.epochs}", "train.patience=100000",
                "train.refit_with_validation=false"] + args.set
        config = load_config(CONFIG, sets)
        out = os.path.join(args.work_dir, f"scale-{users}")
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        result = train_retrieval(config, data, out, verbose=args.verbose)
        total = time.perf_counter() - t
        first, steady = epoch_seconds(out)
        sequences = sum(len(s) >= 2 for s in result.split.train_sequences())
        row = {"name": name, "catalogue": args.catalogue, "users": users,
               "interactions": int(len(data.interactions.user_ids)), "overrides": sets,
               "first_epoch_seconds": first, "steady_epoch_seconds": steady,
               "steady_sequences_per_second": sequences / steady, "total_seconds": total,
               "validation_ndcg10": result.metrics["validation"].get("val_ndcg10"),
               "test": result.metrics["test"]}
        rows.append(row)
        print(f"{name}: first epoch {first:.1f} s, then {steady:.1f} s/epoch "
              f"({sequences / steady:.0f} seq/s incl. validation), total {total:.0f} s", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("quality", "curve", "speed", "ablation", "scale"))
    parser.add_argument("--data", default=os.environ.get("TFREC_ATTN_DATA", os.path.join(ROOT, "..", "shared", "data", "ml-100k")))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1])
    parser.add_argument("--budget", type=float, default=0.0, help="train.time_budget_seconds (0 = config's)")
    parser.add_argument("--epochs", type=int, default=6, help="speed and scale modes: epochs per run")
    parser.add_argument("--catalogue", type=int, default=50 * 1682, help="scale mode: items")
    parser.add_argument("--only", nargs="+", help="ablation mode: run only these rows")
    parser.add_argument("--set", action="append", default=[], help="extra override for every run")
    parser.add_argument("--work-dir", default="/tmp/tfrec_attn_bench")
    parser.add_argument("--out", default="bench_retrieval.jsonl", help="JSON lines appended here")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra/inter-op threads (0 = all cores); 1 to run seeds side by side")
    args = parser.parse_args(argv)
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from tfrec_attn.data import read_movielens

    print(f"machine: {machine()}", flush=True)
    data = read_movielens(args.data) if args.mode != "scale" else None
    if args.mode == "scale":
        rows = scale(args)
    elif args.mode == "speed":
        rows = speed(args, data)
    elif args.mode == "quality":
        rows = [run_one("config", args.set, seed, data, args.work_dir, args.budget, verbose=args.verbose)
                for seed in args.seeds]
        print(table(rows, group=True))
    elif args.mode == "curve":
        rows = []
        for seed in args.seeds:
            r = run_one("curve", args.set, seed, data, args.work_dir, args.budget, track_test=True,
                        verbose=args.verbose)
            rows.append(r)
            from tfrec_attn.training.engine import read_history

            hist = read_history(os.path.join(r["run_dir"], "history.csv"))
            reached = next((h["elapsed"] for h in hist if h.get("test_ndcg10", 0.0) >= 0.108), None)
            r["seconds_to_test_ndcg_0.108"] = reached
            print(f"seed {seed}: test NDCG@10 >= 0.108 first at {reached} s; curve in "
                  f"{os.path.join(r['run_dir'], 'curves.png')}", flush=True)
        print(table(rows, group=True))
    else:
        names = args.only or list(ABLATIONS)
        rows = [run_one(n, ABLATIONS[n] + args.set, args.seeds[0], data, args.work_dir, args.budget,
                        verbose=args.verbose) for n in names]
        print(table(rows))
    with open(args.out, "a") as handle:
        for r in rows:
            handle.write(json.dumps({"mode": args.mode, "machine": machine(), **r}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
