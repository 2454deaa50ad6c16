#!/usr/bin/env python
"""Train the transformer two-tower retrieval model: a Keras training script on the library.

    python training/train_retrieval.py training/configs/ml100k_retrieval.yaml \
        --data ../shared/data/ml-100k --output-dir runs/retrieval --set model.dropout=0.3

It does what ``tfrec-attn train`` does, spelled out: the place to start your own script.
The engine (``Trainer``) owns the loop — tf.distribute strategy, callbacks, checkpoints,
resume, curves — and the recipe owns the model, its data and its metrics; swap the recipe
to train another model the same way.
"""

import argparse

import tfrec_attn  # noqa: F401  (before TensorFlow: Keras 2 for TFRS)
from tfrec_attn.config import load_config
from tfrec_attn.data import load_dataset
from tfrec_attn.training import RetrievalRecipe, Trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--data", help="MovieLens directory (default: the cache or a download)")
    parser.add_argument("--interactions", help="or your own user_id,item_id,timestamp CSV")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    config = load_config(args.config, args.set)                      # file:line errors, --set overrides
    dataset = load_dataset(args.data, dataset=config.data.dataset,   # MovieLens or your CSV
                           interactions=args.interactions)
    recipe = RetrievalRecipe(config, dataset)                        # model, tf.data, metrics, export
    trainer = Trainer(recipe, config, args.output_dir)               # strategy from train.strategy
    result = trainer.run()                                           # select -> refit -> report
    print(f"test NDCG@10 {result.metrics['test']['NDCG@10']:.4f}, HR@10 {result.metrics['test']['HR@10']:.4f}")
    if trainer.chief:
        print("exported", *recipe.export(result.model, result.run.export_base))  # RUN/export/retrieval/1


if __name__ == "__main__":
    main()
