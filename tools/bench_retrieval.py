#!/usr/bin/env python
"""Retrieval benchmarks on MovieLens 100K (results go to docs/benchmarks.md by hand).

    python tools/bench_retrieval.py quality --seeds 42 7 1 [--budget 0] [--set k=v ...]
    python tools/bench_retrieval.py curve --budget 240            # time-to-quality (+ PNG)
    python tools/bench_retrieval.py speed --epochs 6              # seq/s per efficiency option
    python tools/bench_retrieval.py ablation --budget 240         # one row per design choice
    python tools/bench_retrieval.py scale --epochs 2              # default config, 50x catalogue
    python tools/bench_retrieval.py synthetic [--only ...]        # epoch speed per option, 40k users x 50k items

Every run trains from scratch with ``training/configs/ml100k_retrieval.yaml`` plus the
given overrides, chooses the checkpoint on validation NDCG@10 and reports the test split
(full ranking, the project's protocol). Each result is appended as a JSON line to
``--out`` and printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
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
    # a rating-aware history (each event's rating an input of the user tower)
    "history ratings": ["model.user_tower.num_ratings=5"],
    "history ratings, no rating dropout": ["model.user_tower.num_ratings=5", "model.user_tower.rating_dropout=0.0"],
    # item towers (MiniLM text features, frozen and cached)
    "tower=text": ["model.item_tower.type=text"],
    "tower=text, mlp projection": ["model.item_tower.type=text", "model.item_tower.projection=mlp"],
    "tower=hybrid sum": ["model.item_tower.type=hybrid", "model.item_tower.fusion=sum"],
    "tower=hybrid gated": ["model.item_tower.type=hybrid", "model.item_tower.fusion=gated"],
    "tower=hybrid concat_mlp": ["model.item_tower.type=hybrid", "model.item_tower.fusion=concat_mlp"],
    "tower=hybrid sum, id_dropout=0.3": ["model.item_tower.type=hybrid", "model.item_tower.fusion=sum",
                                         "model.item_tower.id_dropout=0.3"],
}

SPEED = {
    "default (bucketed, float32, no XLA)": [],
    "no length bucketing": ["train.bucket_by_length=false"],
    "jit_compile (XLA, bucket-boundary padding)": ["train.jit_compile=true"],
    "mixed precision (bfloat16 on CPU)": ["train.mixed_precision=true"],
    # item towers: the frozen text towers read cached MiniLM features (the fast path)
    "hybrid item tower (frozen MiniLM, cached)": ["model.item_tower.type=hybrid", "model.item_tower.id_dropout=0.3"],
    "text item tower (frozen MiniLM, cached)": ["model.item_tower.type=text"],
}


# Epoch speed options on a mid-size synthetic catalogue (``synthetic`` mode). Every run adds
# SYNTHETIC_BASE: 2 epochs, validation only after epoch 2, no refit (see synthetic()).
_OLD = ["train.steps_per_execution=1", "train.backup_every_steps=50"]  # the defaults before this sweep
SYNTHETIC = {
    "default": [],
    "old default (spe 1, backup every 50 steps)": _OLD,
    "jit_compile (XLA)": ["train.jit_compile=true"],
    "mixed precision (bfloat16)": ["train.mixed_precision=true"],
    "steps_per_execution=8": ["train.steps_per_execution=8"],
    "steps_per_execution=32": ["train.steps_per_execution=32"],
    "batch=64, lr sqrt": ["train.batch_size=64", "train.learning_rate_scaling=sqrt"],
    "batch=128, lr sqrt": ["train.batch_size=128", "train.learning_rate_scaling=sqrt"],
    "batch=128, lr linear": ["train.batch_size=128", "train.learning_rate_scaling=linear"],
    "batch=256, lr sqrt": ["train.batch_size=256", "train.learning_rate_scaling=sqrt"],
    "batch=256, lr linear": ["train.batch_size=256", "train.learning_rate_scaling=linear"],
    "negatives=1024": ["loss.num_negatives=1024"],
    "negatives=512": ["loss.num_negatives=512"],
}
SYNTHETIC_BASE = ["train.epochs=2", "train.eval_every=100000", "train.patience=100000",
                  "train.refit_with_validation=false"]


def machine() -> str:
    import tensorflow as tf

    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, TF {tf.__version__}, {time.strftime('%Y-%m-%d')}")


def run_one(name, overrides, seed, data, work, budget, track_test=False, verbose=0):
    from tfrec_attn.config import load_config
    from tfrec_attn.training import train

    sets = list(overrides) + [f"seed={seed}"]
    if budget:
        sets.append(f"train.time_budget_seconds={budget}")
    config = load_config(CONFIG, sets)
    out = os.path.join(work, f"{name.replace(' ', '_').replace('/', '_')}-{seed}")
    shutil.rmtree(out, ignore_errors=True)
    result = train(config, data, out, verbose=verbose, track_test=track_test)
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
        if args.only and name not in args.only:
            continue
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
    from tfrec_attn.config import load_config
    from tfrec_attn.data.synthetic import popularity_sequences
    from tfrec_attn.training import train

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
        result = train(config, data, out, verbose=args.verbose)
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
        with open(args.out, "a") as handle:  # row by row: a long sweep keeps what it measured
            handle.write(json.dumps({"mode": "synthetic", "machine": machine(), **row}) + "\n")
        print(f"{name}: first epoch {first:.1f} s, then {steady:.1f} s/epoch "
              f"({sequences / steady:.0f} seq/s incl. validation), total {total:.0f} s", flush=True)
    return rows


def synthetic(args):
    """Epoch speed of each option on a synthetic mid-size catalogue (40,000 users, 50,000
    items, ~9 events per user, Zipf popularity), 2 epochs per option.

    ``train.eval_every=100000``: no validation inside fit, so elapsed[2] - elapsed[1] (the
    history's clock) is epoch 2's training alone, its step callbacks included (the clock,
    step backups, TensorBoard). The validation pass (full ranking of every user over the
    catalogue) then runs once on the trained model, timed: its NDCG@10 after 2 epochs is
    the sanity check and its seconds what each validated epoch adds.
    """
    from tfrec_attn.config import load_config
    from tfrec_attn.data.synthetic import popularity_sequences
    from tfrec_attn.evaluation.retrieval import evaluate_model
    from tfrec_attn.training import train
    from tfrec_attn.training.engine import read_history

    began = time.perf_counter()
    data = popularity_sequences(args.items, args.users, args.mean_len, zipf=args.zipf, seed=0)
    print(f"data: {args.users} users, {args.items} items, mean length {args.mean_len}, zipf {args.zipf}: "
          f"{len(data.interactions.user_ids)} interactions ({time.perf_counter() - began:.0f} s to make)",
          flush=True)
    split = None
    extra = {name: [] for name in SYNTHETIC}
    for item in args.combo:  # "NAME:k=v,k=v"
        name, sets = item.split(":", 1)
        extra[name] = sets.split(",")
    names = list(args.only or SYNTHETIC)
    names += [name for name in extra if name not in SYNTHETIC and name not in names]
    rows = []
    for name in names:
        overrides = SYNTHETIC.get(name, []) + extra.get(name, [])
        sets = SYNTHETIC_BASE + overrides + args.set + [f"seed={args.seeds[0]}"]
        config = load_config(CONFIG, sets)
        out = os.path.join(args.work_dir, "synthetic-" + name.replace(" ", "_").replace("/", "_").replace(",", ""))
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        try:
            result = train(config, data, out, verbose=args.verbose, evaluate_test=False, split=split)
        except Exception as error:  # one option failing (e.g. XLA) must not lose the sweep
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            message = f"{type(error).__name__}: {' / '.join(lines[-2:])[:400]}"
            print(f"{name}: FAILED {message}", flush=True)
            with open(args.out, "a") as handle:
                handle.write(json.dumps({"mode": "synthetic", "machine": machine(), "name": name,
                                         "overrides": sets, "error": message}) + "\n")
            continue
        total = time.perf_counter() - t
        split = result.split  # the same split for every option (and no re-splitting cost)
        elapsed = [row["elapsed"] for row in read_history(os.path.join(out, "history.csv"))]
        first, steady = elapsed[0], elapsed[1] - elapsed[0]
        t = time.perf_counter()
        validation = evaluate_model(result.model, result.vocabulary, result.split, "validation", sampled=False)
        validation_seconds = time.perf_counter() - t
        sequences = sum(len(s) >= 2 for s in result.split.train_sequences())
        m = result.metrics
        row = {"name": name, "seed": args.seeds[0], "overrides": sets, "run_dir": out,
               "users": args.users, "items": args.items, "mean_len": args.mean_len, "zipf": args.zipf,
               "interactions": int(len(data.interactions.user_ids)), "sequences": sequences,
               "steps_per_epoch": math.ceil(sequences / config.train.batch_size),
               "learning_rate": m["learning_rate"],
               "first_epoch_seconds": first, "steady_epoch_seconds": steady,
               "steady_sequences_per_second": sequences / steady,
               "validation_seconds": validation_seconds, "run_seconds": total,
               "validation_ndcg10": validation["NDCG@10"], "validation_hr10": validation["HR@10"],
               "load_average_1min": os.getloadavg()[0]}  # other work on the machine skews timings
        rows.append(row)
        with open(args.out, "a") as handle:  # row by row: a long sweep keeps what it measured
            handle.write(json.dumps({"mode": "synthetic", "machine": machine(), **row}) + "\n")
        print(f"{name}: first epoch {first:.1f} s, epoch 2 {steady:.1f} s ({sequences / steady:.0f} seq/s), "
              f"validation pass {validation_seconds:.1f} s, val NDCG@10 {row['validation_ndcg10']:.4f}, "
              f"run {total:.0f} s, load {row['load_average_1min']:.1f}", flush=True)
    base = next((r for r in rows if r["name"] == "default"), None)
    print("\n| option | steps/epoch | lr | first epoch (s) | epoch 2 train (s) | sequences/s | speed-up "
          "| validation pass (s) | val NDCG@10 (2 epochs) |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        up = f"{base['steady_epoch_seconds'] / r['steady_epoch_seconds']:.2f}x" if base else "n/a"
        print(f"| {r['name']} | {r['steps_per_epoch']} | {r['learning_rate']:.4g} | {r['first_epoch_seconds']:.1f} | "
              f"{r['steady_epoch_seconds']:.1f} | {r['steady_sequences_per_second']:.0f} | {up} | "
              f"{r['validation_seconds']:.1f} | {r['validation_ndcg10']:.4f} |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("quality", "curve", "speed", "ablation", "scale", "synthetic"))
    parser.add_argument("--data", default=os.environ.get("TFREC_ATTN_DATA", os.path.join(ROOT, "..", "shared", "data", "ml-100k")))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1])
    parser.add_argument("--budget", type=float, default=0.0, help="train.time_budget_seconds (0 = config's)")
    parser.add_argument("--epochs", type=int, default=6, help="speed and scale modes: epochs per run")
    parser.add_argument("--catalogue", type=int, default=50 * 1682, help="scale mode: items")
    parser.add_argument("--only", nargs="+", help="ablation and synthetic modes: run only these rows")
    parser.add_argument("--combo", action="append", default=[],
                        help="synthetic mode: an extra row NAME:k=v,k=v (e.g. 'best:train.jit_compile=true,...')")
    parser.add_argument("--users", type=int, default=40_000, help="synthetic mode: users")
    parser.add_argument("--items", type=int, default=50_000, help="synthetic mode: items")
    parser.add_argument("--mean-len", type=int, default=9, help="synthetic mode: mean events per user")
    parser.add_argument("--zipf", type=float, default=1.0, help="synthetic mode: popularity exponent")
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
    data = read_movielens(args.data) if args.mode not in ("scale", "synthetic") else None
    if args.mode == "synthetic":
        rows = synthetic(args)
    elif args.mode == "scale":
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
            r["load_average_1min"] = os.getloadavg()[0]  # other work on the machine skews timings
            best_val = max(hist, key=lambda h: h.get("val_ndcg10", -1.0), default={})
            r["seconds_to_best_validation"] = best_val.get("elapsed")
            print(f"seed {seed}: best val NDCG@10 {r['validation_ndcg10']:.4f} at {r['seconds_to_best_validation']} s "
                  f"(epoch {r['best_epoch']} of {r['epochs']}), load {r['load_average_1min']:.1f}; "
                  f"test NDCG@10 >= 0.108 first at {reached} s; curve in "
                  f"{os.path.join(r['run_dir'], 'curves.png')}", flush=True)
        print(table(rows, group=True))
    else:
        names = args.only or list(ABLATIONS)
        rows = [run_one(n, ABLATIONS[n] + args.set, args.seeds[0], data, args.work_dir, args.budget,
                        verbose=args.verbose) for n in names]
        print(table(rows))
    if args.mode == "synthetic":
        return 0  # written row by row
    with open(args.out, "a") as handle:
        for r in rows:
            handle.write(json.dumps({"mode": args.mode, "machine": machine(), **r}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
