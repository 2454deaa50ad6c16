#!/usr/bin/env python
"""Benchmarks of the attention ranking model (issue 18); figures go to docs/benchmarks.md.

    # two-stage vs retrieval-only NDCG@10 on ML-100K test, 3 seeds (retrieval runs are reused
    # from OUT/retrieval-<seed> when present)
    python tools/bench_ranking.py two-stage --seeds 0 1 2 --out runs/bench_ranking --json two_stage.json

    # ranker variants on one seed's candidates (din listwise / pointwise, bst): chosen on validation
    python tools/bench_ranking.py variants --seed 0 --out runs/bench_ranking --json variants.json

    # latency: re-ranking 100 candidates in-process, and `recommend` in-process and over gRPC
    python tools/bench_ranking.py latency --out runs/bench_ranking --json latency.json

``--data`` (default ``$TFREC_ATTN_DATA`` or ../shared/data/ml-100k; or ``--interactions CSV
--items CSV``, e.g. ../shared/data/amazon-scientific) and repeated
``--set KEY=VALUE`` (ranking config) / ``--retrieval-set KEY=VALUE`` apply to every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import tfrec_attn  # noqa: F401  (before TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RETRIEVAL_CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml")
RANKING_CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_ranking.yaml")
VARIANTS = {
    "din-listwise": [],
    "din-pointwise": ["loss.interaction=pointwise"],
    "din-softmax": ["model.normalization=softmax"],
    "bst-listwise": ["model.attention=bst"],
    "din-init": ["model.init_from_retrieval=true"],
    # what retrieval knows, as ranker inputs (issue 25's ablation)
    "din-retrieval": ["model.retrieval_score=true"],
    "din-retrieval-emb": ["model.retrieval_score=true", "model.retrieval_embeddings=true"],
    "din-retrieval-pop": ["model.retrieval_score=true", "model.popularity=true"],
    "din-retrieval-topn": ["model.retrieval_score=true", "loss.hard_negatives=30", "loss.random_negatives=0"],
    "din-retrieval-distill": ["model.retrieval_score=true", "loss.distillation_weight=0.5"],
    "din-retrieval-holdout10": ["model.retrieval_score=true", "retrieval.holdout_events=10"],
    "din-retrieval-holdout20": ["model.retrieval_score=true", "retrieval.holdout_events=20"],
    "din-retrieval-holdout3": ["model.retrieval_score=true", "retrieval.holdout_events=3"],
    "din-pop": ["model.popularity=true"],
    "bst-retrieval": ["model.retrieval_score=true", "model.attention=bst"],
}


def data_dir(args) -> str:
    return args.data or os.environ.get("TFREC_ATTN_DATA", os.path.join(ROOT, "..", "shared", "data", "ml-100k"))


def retrieval_run(args, dataset, seed: int):
    """The retrieval run of ``seed`` under OUT (trained unless it is there)."""
    from tfrec_attn.config import load_config
    from tfrec_attn.training import train

    path = os.path.join(args.out, f"retrieval-{seed}")
    if not os.path.isfile(os.path.join(path, "metrics.json")):
        config = load_config(RETRIEVAL_CONFIG, [f"seed={seed}", *args.retrieval_set])
        began = time.perf_counter()
        train(config, dataset, path, verbose=0)
        print(f"retrieval seed {seed}: trained in {time.perf_counter() - began:.0f}s", flush=True)
    return path


def train_ranker(args, dataset, seed: int, overrides, name: str):
    from tfrec_attn.config import load_config
    from tfrec_attn.training import train

    run = retrieval_run(args, dataset, seed)
    config = load_config(RANKING_CONFIG, [f"seed={seed}", f"retrieval.run_dir={run}", *args.set, *overrides])
    began = time.perf_counter()
    result = train(config, dataset, os.path.join(args.out, f"{name}-{seed}"), verbose=0)
    seconds = time.perf_counter() - began
    m = result.metrics
    row = {"seed": seed, "variant": name, "seconds": seconds, "epochs": m["epochs"], "best_epoch": m["best_epoch"],
           "validation": m["validation"], "test": m["test"]}
    t = m["test"]
    print(f"{name} seed {seed}: two-stage NDCG@10 {t['NDCG@10']:.4f} vs retrieval {t['retrieval_NDCG@10']:.4f} "
          f"(x{t['NDCG@10'] / t['retrieval_NDCG@10']:.3f}); ranker only {t.get('ranker_only_NDCG@10', t['NDCG@10']):.4f}; "
          f"weight {t['retrieval_weight']:g}; AUC {t['AUC']:.4f}"
          + (f"; RMSE {t['RMSE']:.4f}" if "RMSE" in t else "") + f"; {seconds:.0f}s", flush=True)
    return row, result


def summarize(rows) -> dict:
    keys = ["NDCG@10", "HR@10", "retrieval_NDCG@10", "retrieval_HR@10", "ranker_only_NDCG@10", "recall@100",
            "AUC", "RMSE", "MAE", "retrieval_weight"]
    out = {}
    for key in keys:
        values = [r["test"][key] for r in rows if key in r["test"]]
        if values:
            out[key] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
    ratios = [r["test"]["NDCG@10"] / r["test"]["retrieval_NDCG@10"] for r in rows]
    out["ratio"] = {"mean": statistics.fmean(ratios), "sd": statistics.stdev(ratios) if len(ratios) > 1 else 0.0}
    return out


def cmd_two_stage(args, dataset):
    rows = [train_ranker(args, dataset, seed, VARIANTS[args.variant], args.variant)[0] for seed in args.seeds]
    summary = summarize(rows)
    print("\nmean ± sd over seeds", args.seeds)
    for key, value in summary.items():
        print(f"  {key:<22} {value['mean']:.4f} ± {value['sd']:.4f}")
    return {"rows": rows, "summary": summary}


def cmd_variants(args, dataset):
    rows = [train_ranker(args, dataset, args.seed, VARIANTS[name], name)[0] for name in args.variants]
    chosen = max(rows, key=lambda r: r["validation"].get("val_ndcg10", 0.0))
    print(f"\nchosen on validation NDCG@10 (two-stage): {chosen['variant']}")
    for r in rows:
        print(f"  {r['variant']:<14} val {r['validation'].get('val_ndcg10', 0):.4f}  test {r['test']['NDCG@10']:.4f}  "
              f"ranker only {r['test'].get('ranker_only_NDCG@10', r['test']['NDCG@10']):.4f}  {r['seconds']:.0f}s")
    return {"rows": rows, "chosen": chosen["variant"]}


def percentiles(seconds) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "calls": len(ms)}


def cmd_latency(args, dataset):
    """In-process: the ranking export's serving_default on [1, 50] history x [1, 100]
    candidates, and the recommend export; over gRPC: recommend, batch 1 (a `tfrec-attn serve`
    subprocess on 127.0.0.1)."""
    import tensorflow as tf

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from serving_fixtures import ServerProcess

    from tfrec_attn.serving.client import RecommenderClient

    seed = args.seed
    _, result = train_ranker(args, dataset, seed, ["train.epochs=1"], "latency") if not args.export_base \
        else (None, None)
    base = args.export_base or os.path.join(args.out, f"latency-{seed}", "export")
    if result is not None:
        result.export(base)  # ranking + recommend
    from tfrec_attn.export.saved_model import versions

    ranking = tf.saved_model.load(os.path.join(base, "ranking", str(versions(os.path.join(base, "ranking"))[-1])))
    recommend = tf.saved_model.load(os.path.join(base, "recommend",
                                                 str(versions(os.path.join(base, "recommend"))[-1])))
    from tfrec_attn.features.vocab import ItemVocabulary

    # The catalogue: the retrieval run's vocabulary (a main job's OUTPUT/retrieval beside its OUTPUT/export).
    vocab = os.path.join(args.out, f"retrieval-{seed}", "vocab", "items.txt")
    beside = os.path.join(os.path.dirname(os.path.abspath(base)), "retrieval", "vocab", "items.txt")
    split_items = list(ItemVocabulary.load(beside if args.export_base and os.path.isfile(beside) else vocab).item_ids)
    rng = np.random.default_rng(0)
    histories = [rng.choice(split_items, 50, replace=False) for _ in range(args.calls)]
    candidates = [rng.choice(split_items, 100, replace=False) for _ in range(args.calls)]

    def timed(fn, count):
        for i in range(20):  # warm up
            fn(i % count)
        out = []
        for i in range(count):
            began = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - began)
        return percentiles(out)

    rank_fn = ranking.signatures["serving_default"]
    rec_fn = recommend.signatures["serving_default"]
    results = {
        "rerank_100_in_process": timed(lambda i: rank_fn(history=tf.constant([histories[i]]),
                                                         candidates=tf.constant([candidates[i]])), args.calls),
        "recommend_in_process": timed(lambda i: rec_fn(history=tf.constant([histories[i]])), args.calls),
    }
    from tfrec_attn.serving.config import write_model_server_config

    models_config = write_model_server_config(os.path.join(base, "models.config"), [
        (name, os.path.abspath(os.path.join(base, name))) for name in ("ranking", "recommend")])
    server = ServerProcess(None, "--model_config_file", models_config)
    try:
        with RecommenderClient(server.target, model_name="recommend", timeout=30) as client:
            results["recommend_grpc"] = timed(lambda i: client.predict({"history": np.array([histories[i]], object)}),
                                              args.calls)
    finally:
        server.stop()
    for name, value in results.items():
        print(f"{name:<24} p50 {value['p50_ms']:.2f} ms  p99 {value['p99_ms']:.2f} ms  ({value['calls']} calls)")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("two-stage", "variants", "latency"))
    parser.add_argument("--data")
    parser.add_argument("--interactions", help="a generic interactions CSV instead of MovieLens")
    parser.add_argument("--items", help="its items CSV")
    parser.add_argument("--out", default="runs/bench_ranking")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default="din-listwise", choices=sorted(VARIANTS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=sorted(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="ranking config override")
    parser.add_argument("--retrieval-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--calls", type=int, default=500, help="latency: timed calls per measurement")
    parser.add_argument("--export-base", help="latency: existing export base with ranking/ and recommend/")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    from tfrec_attn.data import load_dataset

    os.makedirs(args.out, exist_ok=True)
    dataset = load_dataset(interactions=args.interactions, items=args.items) if args.interactions \
        else load_dataset(data_dir(args))
    run = {"two-stage": cmd_two_stage, "variants": cmd_variants, "latency": cmd_latency}[args.mode]
    began = time.perf_counter()
    results = run(args, dataset)
    results["seconds"] = time.perf_counter() - began
    results["command"] = " ".join(sys.argv)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1, default=float)


if __name__ == "__main__":
    main()
