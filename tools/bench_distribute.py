#!/usr/bin/env python
"""Training throughput of the engine under each tf.distribute setup (ML-100K, CPU).

    python tools/bench_distribute.py [--epochs 4] [--data ../shared/data/ml-100k] [--only NAME ...]

Runs the default retrieval config for ``--epochs`` epochs (no refit, validation only in the
last epoch) as a user would — ``tfrec-attn train`` — under:

* ``one device``: the default strategy;
* ``mirrored, 2 logical CPUs``: MirroredStrategy over the CPU split in two;
* ``2 local workers``: ``--workers 2`` (MultiWorkerMirroredStrategy on 127.0.0.1);
* ``parameter servers``: ``--workers 1 --ps 2`` (a chief, 2 parameter servers, 1 worker).

and reports the steady epochs' sequences/s (epochs 2.. of history.csv's ``elapsed``; the
first epoch holds graph building). All of them share this machine's cores: on 2 cores
little speed-up is possible; the point is correctness and the cost of each setup.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml")
CLI = [sys.executable, "-m", "tfrec_attn.app.cli"]

SETUPS = {
    "one device": ([], []),
    "mirrored, 2 logical CPUs": (["--set", "train.strategy=mirrored"], ["split"]),
    "2 local workers": (["--workers", "2"], []),
    "parameter servers (chief + 2 ps + 1 worker)": (["--workers", "1", "--ps", "2"], []),
}


def run(name: str, args, work: str) -> dict:
    extra, flags = SETUPS[name]
    out = os.path.join(work, name.split()[0])
    argv = ["train", CONFIG, "--data", args.data, "--output-dir", out, "--no-export", "--keras-verbose", "0",
            "--set", f"train.epochs={args.epochs}", "--set", f"train.eval_every={args.epochs}",
            "--set", "train.refit_with_validation=false", "--set", "train.patience=100", *extra]
    if "split" in flags:
        code = ("import sys, tfrec_attn\nfrom tfrec_attn.training import distribute\ndistribute.split_cpu(2)\n"
                f"from tfrec_attn.app.cli import main\nsys.exit(main({argv!r}))")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = CLI + argv
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    from tfrec_attn.training.engine import read_history

    history = read_history(os.path.join(out, "history.csv"))
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    elapsed = [row["elapsed"] for row in history]
    steady = (elapsed[-2] - elapsed[0]) / max(1, len(elapsed) - 2)  # epochs 2 .. n-1 (no validation)
    sequences = metrics["sequences_per_second"] * metrics["train_seconds"] / max(1, metrics["epochs"])
    return {"setup": name, "replicas": metrics["replicas"], "per_replica_batch": metrics["per_replica_batch_size"],
            "first_epoch_s": elapsed[0], "steady_epoch_s": steady, "sequences_per_epoch": round(sequences),
            "steady_seq_per_s": sequences / steady, "val_ndcg10": metrics["validation"].get("val_ndcg10")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("TFREC_ATTN_DATA", os.path.join(ROOT, "..", "shared", "data", "ml-100k")))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--only", nargs="+", choices=list(SETUPS))
    parser.add_argument("--out", default="bench_distribute.jsonl")
    args = parser.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name in args.only or SETUPS:
            row = run(name, args, work)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| setup | replicas | per-replica batch | first epoch (s) | steady epoch (s) | seq/s | val NDCG@10 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setup']} | {r['replicas']} | {r['per_replica_batch']} | {r['first_epoch_s']:.1f} | "
              f"{r['steady_epoch_s']:.2f} | {r['steady_seq_per_s']:.0f} | {r['val_ndcg10']:.4f} |")
    with open(args.out, "a") as handle:
        for r in rows:
            handle.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    sys.exit(main())
