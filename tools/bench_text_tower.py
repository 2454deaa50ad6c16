#!/usr/bin/env python
"""Text-tower speed benchmarks on MovieLens 100K (results go to docs/benchmarks.md by hand).

    python tools/bench_text_tower.py embed               # encode all item texts with MiniLM
    python tools/bench_text_tower.py add-items --n 100   # `tfrec-attn index add-items` of N new items (--tower)
    python tools/bench_text_tower.py finetune --steps 6  # seconds per fine-tuning step (last layer)

``embed`` times the encoder over the 1,682 ML-100K item texts (the frozen tower's one-off
cost; the encoder's build is reported apart). ``add-items`` trains the main job's item tower
(``--tower``: the id + text ensemble, or the hybrid) for one epoch, exports it, and times the
CLI adding N new items (titles of real movies with new
ids) as a whole process, load and save included. ``finetune`` times training steps with the
encoder's last transformer layer trainable (epoch = steps per epoch x that). Epoch times of
the frozen towers vs the id tower: ``tools/bench_retrieval.py speed --only ...``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import tfrec_attn  # noqa: F401  (before TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml")
# add-items: the item tower of the export (ensemble: the main job's, training/configs/ml100k_pipeline.yaml)
TOWERS = {"ensemble": ["model.item_tower.type=ensemble", "model.item_tower.projection=mlp"],
          "hybrid": ["model.item_tower.type=hybrid", "model.item_tower.id_dropout=0.3"]}


def embed(args, data):
    from tfrec_attn.text import DEFAULT_ENCODER, resolve_model_dir
    from tfrec_attn.text.encoder import TextEncoder, encode_texts

    texts = [item.text for item in data.items.values()]
    began = time.perf_counter()
    encoder = TextEncoder(resolve_model_dir(DEFAULT_ENCODER), max_tokens=64)
    build = time.perf_counter() - began
    runs = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        encode_texts(encoder, texts)
        runs.append(time.perf_counter() - began)
    print(f"{len(texts)} item texts, MiniLM-L6 (max 64 tokens, batches of 128 sorted by length): "
          f"{min(runs):.2f} / {statistics.median(runs):.2f} / {max(runs):.2f} s (min / median / max of "
          f"{args.repeats}; the first includes tracing); encoder build (weights load) {build:.1f} s")


def add_items_bench(args, data):
    from tfrec_attn.config import load_config
    from tfrec_attn.export.saved_model import versions
    from tfrec_attn.training import train

    work = tempfile.mkdtemp(prefix="bench_add_items_")
    config = load_config(CONFIG, [*TOWERS[args.tower], "train.epochs=1", "train.refit_with_validation=false"])
    result = train(config, data, os.path.join(work, "run"), verbose=0, evaluate_test=False)
    base = os.path.join(work, "export")
    result.export(base)  # the recipe's own export (the ensemble: its one `retrieval`)
    items = list(data.items.values())[: args.n]
    path = os.path.join(work, "new_items.csv")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("item_id,title,genres\n")
        for i, item in enumerate(items):
            title = item.title.replace('"', "'")
            handle.write(f'new-{i},"{title} (new edition)",{"|".join(item.genres)}\n')
    runs = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tfrec_attn.app.cli", "index", "add-items", base, "--items", path],
                       check=True, capture_output=True)
        runs.append(time.perf_counter() - began)
        # each run adds the same ids to the newest version: drop it to measure the same work again
        newest = versions(os.path.join(base, "retrieval"))[-1]
        if newest > 1:
            import shutil

            shutil.rmtree(os.path.join(base, "retrieval", str(newest)))
    print(f"tfrec-attn index add-items ({args.tower} export), {args.n} items, whole process (python start, load, embed, save): "
          f"{min(runs):.1f} / {statistics.median(runs):.1f} / {max(runs):.1f} s (min / median / max of {args.repeats})")


def finetune(args, data):
    """Seconds per training step with the encoder's last layer trainable."""
    import tensorflow as tf

    from tfrec_attn.config import load_config
    from tfrec_attn.training.retrieval import RetrievalRecipe

    overrides = ["model.item_tower.type=hybrid", "model.item_tower.trainable_layers=1", *args.set]
    config = load_config(CONFIG, overrides)
    recipe = RetrievalRecipe(config, data)
    recipe.prepare(None)
    model = recipe.build_model()
    model.compile(tf.keras.optimizers.Adam(config.train.learning_rate))
    steps_per_epoch = -(-recipe.num_examples() // config.train.batch_size)
    dataset = recipe.dataset(tf.distribute.InputContext(), repeat=True).take(args.steps + 1)
    train_step = tf.function(model.train_step, reduce_retracing=True)
    began = None
    for step, batch in enumerate(dataset):
        if step == 1:
            began = time.perf_counter()  # the first step traces
        train_step(batch)
    per_step = (time.perf_counter() - began) / args.steps
    print(f"fine-tuning ({', '.join(overrides)}): {per_step:.1f} s per step (mean of {args.steps} after the first); "
          f"{steps_per_epoch} steps per epoch -> {per_step * steps_per_epoch / 60:.1f} min per epoch")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("embed", "add-items", "finetune"))
    parser.add_argument("--data", default=os.environ.get("TFREC_ATTN_DATA",
                                                         os.path.join(ROOT, "..", "shared", "data", "ml-100k")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=100, help="add-items: new items")
    parser.add_argument("--tower", choices=sorted(TOWERS), default="ensemble",
                        help="add-items: the export's item tower (default: the main job's, ensemble)")
    parser.add_argument("--steps", type=int, default=4, help="finetune: timed steps")
    parser.add_argument("--set", action="append", default=[], help="finetune: extra overrides")
    args = parser.parse_args(argv)
    from tfrec_attn.data import read_movielens

    data = read_movielens(args.data)
    {"embed": embed, "add-items": add_items_bench, "finetune": finetune}[args.mode](args, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
