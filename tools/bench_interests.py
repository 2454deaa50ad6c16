#!/usr/bin/env python
"""Multi-interest benchmark: K interests against one vector, same loss and budget (results
go to docs/benchmarks.md by hand).

    python tools/bench_interests.py --interests 1 4 --seeds 42 [--set k=v ...]
    python tools/bench_interests.py --interactions ../shared/data/amazon-scientific/interactions.csv \
        --items ../shared/data/amazon-scientific/items.csv --interests 1 4
    python tools/bench_interests.py --profile --interests 1 4   # the interest profile
    python tools/bench_interests.py --interests 1 4 --aggregations max proportional   # both merges of K = 4
    python tools/bench_interests.py --latency EXPORT_K1 EXPORT_K4   # time two exports together

Each K trains ``training/configs/ml100k_retrieval.yaml`` + ``model.user_tower.interests=K``
+ the overrides (default: 40 epochs each, early stopping on validation NDCG@10, no refit, so test is scored by the
model selected on validation). Per run, on the test split, full ranking:

* NDCG@10, HR@10, HR@50 (history excluded);
* breadth of every test user's top-10: distinct genres (categories) per list, catalogue
  coverage;
* collapse (K > 1): mean pairwise cosine of a user's interests, each interest's share of the
  training targets (each user's last one) it scores highest, interests per top-10;
* labels (K > 1): how often the test item's genre is among the genre labels of the interest
  that scores it highest, against a randomly drawn interest's labels (the labels are the
  export's own code, :class:`tfrec_attn.export.interests.InterestLabels`: terms ranked by
  attention mass, and, on the same model, by mass x exclusivity);
* ``serving_default`` latency, in process, batch 1 (p50 / p99 over 3 x 300 calls of real test
  histories), from the exported SavedModels, all of a run's exports loaded together and called
  in turn on each request (``--latency EXPORT ...`` times given exports the same way).

``--profile``: the interest profile instead (:mod:`tfrec_attn.training.interest_profile`): a
seeded 20% of the users lose their last 10 events (no model sees them), the retrieval model
trains on the rest, the head is fitted on the training windows and predicts the held-out
users' next-10 genre distribution; cross-entropy and top-genre accuracy against the
history's own smoothed genre counts.
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
DEFAULTS = ["train.epochs=40", "train.time_budget_seconds=0", "train.refit_with_validation=false"]


def top10(model, vocabulary, split):
    """Every test user's top-10 (history excluded), catalogue indices."""
    import numpy as np

    from tfrec_attn.evaluation.protocol import without_history
    from tfrec_attn.evaluation.retrieval import catalogue_scorer

    scorer = catalogue_scorer(model, vocabulary, split)
    histories = split.inputs("test")
    lists = []
    for start in range(0, len(histories), 512):
        scores = without_history(scorer(None, histories[start:start + 512]), histories[start:start + 512])
        lists.append(np.argsort(-scores, axis=1, kind="stable")[:, :10])
    return np.concatenate(lists)


def label_hits(model, vocabulary, split, dataset, seed: int) -> dict:
    """How often the test item has a genre among the genre labels of the interest that scores
    it highest, and of a randomly drawn one, with terms ranked by attention mass (the export's
    labels, key ``mass``) and by mass x exclusivity (``exclusive``), in one pass over the test
    users and on the same random draws: ``{ranking: (best rate, random rate)}``, ``counted``."""
    import numpy as np

    from tfrec_attn.evaluation.interests import interest_scores
    from tfrec_attn.export.interests import InterestLabels
    from tfrec_attn.features.item_terms import item_terms

    genres, words = item_terms(dataset, vocabulary)
    labelers = {name: InterestLabels(genres, words, list(vocabulary.item_ids), exclusive=name == "exclusive")
                for name in ("mass", "exclusive")}
    histories, targets = split.inputs("test"), split.targets("test")
    rng = np.random.default_rng(seed)
    hits = {name: np.zeros(2) for name in labelers}  # (best, random)
    counted = 0
    for start, _, scores, attention, compact in interest_scores(model, vocabulary, split, histories):
        labels = {name: labeler(compact, attention)["genres"].numpy().astype(str)  # [b, K, 2]
                  for name, labeler in labelers.items()}
        for r, target in enumerate(targets[start:start + len(scores)]):
            item = dataset.items.get(split.item_vocab[target])
            column = scores[r, :, target]
            if item is None or not item.genres or not np.isfinite(column).all():
                continue
            wanted = set(item.genres)
            counted += 1
            chosen = (int(np.argmax(column)), int(rng.integers(model.num_interests)))
            for name in labelers:
                hits[name] += [bool(wanted & set(labels[name][r, k])) for k in chosen]
    return {**{name: tuple(float(h) / max(counted, 1) for h in value) for name, value in hits.items()},
            "counted": counted}


def latencies(export_paths, split, calls: int = 300, passes: int = 3) -> list[tuple[float, float]]:
    """``serving_default`` latency of each export, batch 1: (p50, p99) ms over ``passes`` x
    ``calls`` requests of real test histories (their last 200 items). The exports are loaded
    in one process and called in turn on the same request, so a K = 1 and a K = 4 model are
    timed under the same machine load (timed one after the other, minutes apart, their ratio
    moved by up to 50% with the load)."""
    import numpy as np
    import tensorflow as tf

    serves = [tf.saved_model.load(path).signatures["serving_default"] for path in export_paths]
    histories = split.inputs("test")
    requests = [tf.constant([[str(split.item_vocab[i]) for i in h[-200:]]]) for h in histories[:calls]]
    for serve in serves:
        for r in requests[:20]:
            serve(history=r)
    times = [[] for _ in serves]
    for _ in range(passes):
        for r in requests:
            for serve, spent in zip(serves, times):
                start = time.perf_counter()
                serve(history=r)
                spent.append(1000 * (time.perf_counter() - start))
    return [(float(np.percentile(t, 50)), float(np.percentile(t, 99))) for t in times]


def with_aggregation(model, aggregation: str):
    """The trained multi-interest ``model`` (same weights) merging its interests by ``aggregation``."""
    from tfrec_attn.models import MultiInterestRetrievalModel

    if aggregation == model.aggregation:
        return model
    clone = MultiInterestRetrievalModel.from_config({**model.get_config(), "aggregation": aggregation})
    clone.build_weights().set_weights(model.get_weights())
    return clone


def run_one(dataset, k: int, seed: int, overrides, out_dir: str, aggregations=()) -> list[dict]:
    """One training run of K interests; a row per aggregation (K > 1: the trained model's own,
    then each of ``aggregations``, the same weights merged otherwise; test and validation
    metrics of each from the same full-ranking protocol)."""
    from tfrec_attn.config import load_config
    from tfrec_attn.evaluation import Evaluator
    from tfrec_attn.evaluation.interests import interest_diagnostics, list_breadth
    from tfrec_attn.evaluation.retrieval import catalogue_scorer
    from tfrec_attn.training import train

    config = load_config(CONFIG, [f"seed={seed}", f"model.user_tower.interests={k}", *DEFAULTS, *overrides])
    run_dir = os.path.join(out_dir, f"k{k}_s{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.time()
    result = train(config, dataset, run_dir, verbose=0)
    seconds = time.time() - start
    vocabulary, split = result.recipe.vocabulary, result.recipe.split
    genres = [dataset.items[i].genres if i in dataset.items else () for i in split.item_vocab]
    own = config.model.user_tower.aggregation
    rows = []
    for aggregation in ([own] + [a for a in aggregations if a != own] if k > 1 else [own]):
        model = with_aggregation(result.model, aggregation) if k > 1 else result.model
        if aggregation == own:
            test, validation = result.metrics["test"], result.metrics["validation"]
        else:
            scorer = catalogue_scorer(model, vocabulary, split)
            test, validation = (Evaluator(split, stage).evaluate(scorer, sampled=False)
                                for stage in ("test", "validation"))
            validation = {f"val_{m.replace('@', '').lower()}": v for m, v in validation.items()}
        row = {"K": k, "seed": seed, "aggregation": aggregation if k > 1 else "-", "seconds": seconds,
               "epochs": result.metrics["epochs"], **{m: test[m] for m in ("HR@10", "NDCG@10", "HR@50")},
               "val_NDCG@10": validation.get("val_ndcg10", float("nan")),
               **list_breadth(top10(model, vocabulary, split), genres, split.num_items)}
        if k > 1:
            diagnostics = interest_diagnostics(model, vocabulary, split, "train", max_users=None)
            row.update({name: diagnostics[name] for name in ("interest_cosine", "interest_min_share",
                                                             "interests_in_top10", "interest_shares")})
            hits = label_hits(model, vocabulary, split, dataset, seed)
            row.update({"label_hit_best": hits["mass"][0], "label_hit_random": hits["mass"][1],
                        "label_hit_best_exclusive": hits["exclusive"][0],
                        "label_hit_random_exclusive": hits["exclusive"][1], "label_users": hits["counted"]})
        row["export"] = result.recipe.export(model, os.path.join(out_dir, f"export_k{k}_s{seed}_{aggregation}"))[0]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows, split


def time_exports(rows, split) -> None:
    """Every row's export timed together (:func:`latencies`): ``p50_ms`` / ``p99_ms``."""
    for row, (p50, p99) in zip(rows, latencies([row["export"] for row in rows], split)):
        row["p50_ms"], row["p99_ms"] = p50, p99


def run_profile(dataset, k: int, seed: int, overrides, out_dir: str) -> dict:
    """The interest profile on the future protocol (:func:`training.interest_profile.future_split`):
    the retrieval model trains without the held-out users' last 10 events; the head, fitted
    on the training windows, predicts their genre distribution, against the history's own."""
    import numpy as np

    from tfrec_attn.config import load_config
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.training import train
    from tfrec_attn.training.interest_profile import (
        distribution,
        fit_profile,
        future_split,
        profile_metrics,
    )

    config = load_config(CONFIG, [f"seed={seed}", f"model.user_tower.interests={k}", *DEFAULTS, *overrides])
    reduced, held, futures = future_split(leave_one_out(dataset.interactions, config.data.min_interactions))
    run_dir = os.path.join(out_dir, f"profile_k{k}_s{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    result = train(config, dataset, run_dir, split=reduced, verbose=0)
    start = time.time()
    profile = fit_profile(result.model, result.recipe.vocabulary, reduced, dataset, seed=seed)
    histories = [reduced.sequences[u] for u in held]
    targets = np.stack([distribution(profile.table, f) for f in futures])
    head = profile_metrics(profile.predict(histories), targets)
    baseline = profile_metrics(profile.history_baseline(histories), targets)
    row = {"K": k, "seed": seed, "profile_seconds": time.time() - start, "held_users": len(held),
           "smoothing": profile.smoothing, "head": head, "history_counts": baseline}
    print(json.dumps(row), flush=True)
    return row


def profile_table(rows) -> str:
    lines = ["| K | seed | users | head cross-entropy | history counts cross-entropy | head top-genre acc. | "
             "history counts top-genre acc. |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['K']} | {r['seed']} | {r['head']['users']} | {r['head']['cross_entropy']:.4f} | "
                     f"{r['history_counts']['cross_entropy']:.4f} | {r['head']['top_genre_accuracy']:.3f} | "
                     f"{r['history_counts']['top_genre_accuracy']:.3f} |")
    return "\n".join(lines)


def table(rows) -> str:
    lines = ["| K | aggregation | seed | epochs | val NDCG@10 | HR@10 | NDCG@10 | HR@50 | genres / top-10 | coverage | "
             "cosine | min share | interests / top-10 | label hit (best / random) | by mass x exclusivity | p50 / p99 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        extra = (f"{r['interest_cosine']:.3f} | {r['interest_min_share']:.3f} | {r['interests_in_top10']:.2f} | "
                 f"{r['label_hit_best']:.3f} / {r['label_hit_random']:.3f} | "
                 f"{r['label_hit_best_exclusive']:.3f} / {r['label_hit_random_exclusive']:.3f}") if r["K"] > 1 \
            else "– | – | – | – | –"
        lines.append(f"| {r['K']} | {r['aggregation']} | {r['seed']} | {r['epochs']} | {r['val_NDCG@10']:.4f} | "
                     f"{r['HR@10']:.4f} | {r['NDCG@10']:.4f} | "
                     f"{r['HR@50']:.4f} | {r['genres_per_list']:.2f} | {r['coverage']:.3f} | {extra} | "
                     f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} |")
    variants = sorted({(r["K"], r["aggregation"]) for r in rows})
    if len(variants) > 1:
        def mean(variant, m):
            return statistics.mean(r[m] for r in rows if (r["K"], r["aggregation"]) == variant)
        lines.append("")
        for variant in variants[1:]:
            lines.append(f"K={variant[0]} ({variant[1]}) / K={variants[0][0]}: " + ", ".join(
                f"{m} x{mean(variant, m) / mean(variants[0], m):.3f}"
                for m in ("NDCG@10", "HR@50", "genres_per_list", "coverage", "p99_ms")))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interests", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "ml-100k"))
    parser.add_argument("--interactions")
    parser.add_argument("--items")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--out", default="/tmp/bench_interests")
    parser.add_argument("--aggregations", nargs="+", default=[],
                        help="K > 1: also score each trained model with these aggregations (the same weights)")
    parser.add_argument("--latency", nargs="+", metavar="EXPORT",
                        help="only time these retrieval exports' serving_default together (no training)")
    parser.add_argument("--profile", action="store_true",
                        help="measure the interest profile on the future protocol instead")
    args = parser.parse_args(argv)
    if args.interactions:
        from tfrec_attn.data import read_csv_dataset

        dataset = read_csv_dataset(args.interactions, args.items)
    else:
        from tfrec_attn.data import read_movielens

        dataset = read_movielens(args.data)
    if args.profile:
        rows = [run_profile(dataset, k, seed, args.overrides, args.out) for seed in args.seeds for k in args.interests]
        print(profile_table(rows))
        return 0
    if args.latency:
        from tfrec_attn.data import leave_one_out

        split = leave_one_out(dataset.interactions, 3)
        for path, (p50, p99) in zip(args.latency, latencies(args.latency, split)):
            print(f"{path}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        return 0
    rows, split = [], None
    for seed in args.seeds:
        for k in args.interests:
            seed_rows, split = run_one(dataset, k, seed, args.overrides, args.out, args.aggregations)
            rows += seed_rows
    time_exports(rows, split)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
