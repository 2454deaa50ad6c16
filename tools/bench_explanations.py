#!/usr/bin/env python
"""Are the ``recommend`` export's explanations faithful? The deletion test (issue 25).

    tfrec-attn run --output-dir runs/main
    python tools/bench_explanations.py runs/main [--data ../shared/data/ml-100k] [--users 0]

For every test user (the main job's leave-one-out split: the history is everything before
the held-out item) and each of the ``recommend`` model's top 10, through the served
signatures only:

* the item's ranker score (the ranking export's ``serving_default``) with its 3 ``because``
  items removed from the history, and with 3 history items removed at random from those the
  ranker reads (its newest ``max_len`` known items; seeded) — the mean score drop of each,
  and their quotient (target: because >= 3 x random);
* whether the item is still in the user's ``recommend`` top 10 after each removal.

Figures go to docs/benchmarks.md by hand; ``--out`` appends them as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

import tfrec_attn  # noqa: F401  (before TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def newest(model_dir: str) -> str:
    from tfrec_attn.export.saved_model import versions

    return os.path.join(model_dir, str(versions(model_dir)[-1]))


def pad(rows) -> np.ndarray:
    width = max(1, max(len(r) for r in rows))
    out = np.full((len(rows), width), "", dtype=object)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the main job's output directory (export/recommend, export/ranking)")
    parser.add_argument("--data", default=os.environ.get("TFREC_ATTN_DATA",
                                                         os.path.join(ROOT, "..", "shared", "data", "ml-100k")))
    parser.add_argument("--interactions", help="generic interactions CSV instead of --data")
    parser.add_argument("--items", help="its items CSV")
    parser.add_argument("--users", type=int, default=0, help="test users (0 = all)")
    parser.add_argument("--removed", type=int, default=3, help="history items removed each way")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32, help="users per request")
    parser.add_argument("--out", default="bench_explanations.jsonl")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from tfrec_attn.config import load_config
    from tfrec_attn.data import leave_one_out, load_dataset

    data = load_dataset(None if args.interactions else args.data, interactions=args.interactions, items=args.items)
    retrieval_config = load_config(os.path.join(args.run, "retrieval_config.yaml"))
    ranking_config = load_config(os.path.join(args.run, "ranking_config.yaml"))
    split = leave_one_out(data.interactions, retrieval_config.data.min_interactions)
    max_len = ranking_config.model.max_len
    recommend = tf.saved_model.load(newest(os.path.join(args.run, "export", ranking_config.export.recommend_name)))
    ranking = tf.saved_model.load(newest(os.path.join(args.run, "export", ranking_config.export.model_name)))
    vocabulary = set(open(os.path.join(args.run, "ranking", "vocab", "items.txt")).read().split("\n")) - {""}
    users = split.evaluated if not args.users else split.evaluated[:args.users]
    rng = np.random.default_rng(args.seed)
    drops = {"because": [], "random": []}
    left = {"because": 0, "random": 0}
    pairs = 0
    began = time.perf_counter()
    for start in range(0, len(users), args.batch):
        rows = users[start:start + args.batch]
        histories = [[str(i) for i in split.item_vocab[split.sequences[u][:-1]]] for u in rows]
        out = recommend.signatures["serving_default"](history=tf.constant(pad(histories)))
        items = out["item_ids"].numpy().astype(str)
        because = out["because_ids"].numpy().astype(str)
        base = ranking.signatures["serving_default"](history=tf.constant(pad(histories)),
                                                     candidates=tf.constant(items))["scores"].numpy()
        changed = {"because": [], "random": []}
        for row, history in enumerate(histories):
            read = [i for i, h in enumerate(history) if h in vocabulary][-max_len:]
            for col, item in enumerate(items[row]):
                if not item:
                    continue
                reasons = {b for b in because[row, col] if b}
                cut = {"because": [i for i, h in enumerate(history) if h in reasons][-args.removed:],
                       "random": list(rng.choice(read, size=min(args.removed, len(read)), replace=False))}
                for way in cut:
                    drop = set(cut[way])
                    changed[way].append((row, col, [h for i, h in enumerate(history) if i not in drop]))
        for way, entries in changed.items():
            if not entries:
                continue
            shortened = pad([h for _, _, h in entries])
            candidates = np.array([[items[r, c]] for r, c, _ in entries], dtype=object)
            again = ranking.signatures["serving_default"](history=tf.constant(shortened),
                                                          candidates=tf.constant(candidates))["scores"].numpy()[:, 0]
            drops[way].extend(base[r, c] - a for (r, c, _), a in zip(entries, again))
            # in requests of --batch rows (the export's size limit counts rows x candidates x history)
            top = np.concatenate([recommend.signatures["serving_default"](
                history=tf.constant(shortened[s:s + args.batch]))["item_ids"].numpy().astype(str)
                for s in range(0, len(shortened), args.batch)])
            left[way] += sum(items[r, c] not in set(t) for (r, c, _), t in zip(entries, top))
        pairs += sum(1 for row in items for item in row if item)
        print(f"\r{min(start + args.batch, len(users))}/{len(users)} users", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    result = {
        "run": args.run, "data": data.name, "users": int(len(users)), "items": pairs, "removed": args.removed,
        "mean_drop_because": float(np.mean(drops["because"])), "mean_drop_random": float(np.mean(drops["random"])),
        "leaves_top10_because": left["because"] / max(len(drops["because"]), 1),
        "leaves_top10_random": left["random"] / max(len(drops["random"]), 1),
        "seconds": time.perf_counter() - began, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    result["ratio"] = result["mean_drop_because"] / result["mean_drop_random"] if result["mean_drop_random"] else \
        float("inf")
    print(f"{pairs} (user, item) pairs of {len(users)} test users; removing {args.removed} history items:\n"
          f"  because items: mean ranker-score drop {result['mean_drop_because']:.4f}; the item leaves the top 10 "
          f"{result['leaves_top10_because']:.1%}\n"
          f"  random items:  mean ranker-score drop {result['mean_drop_random']:.4f}; the item leaves the top 10 "
          f"{result['leaves_top10_random']:.1%}\n"
          f"  because / random: {result['ratio']:.2f} x (target >= 3)")
    with open(args.out, "a") as handle:
        handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
