#!/usr/bin/env python
"""Train the DIN / BST attention ranking model on a retrieval run's candidates.

    python training/train_ranking.py training/configs/ml100k_ranking.yaml \
        --data ../shared/data/ml-100k --output-dir runs/ranking --set model.attention=bst

The same engine as training/train_retrieval.py (strategy, callbacks, checkpoints, resume,
curves): only the recipe differs. It exports the ranking model and the ``recommend`` model
(retrieval + ranking in one SavedModel) under OUTPUT_DIR/export.
"""

import argparse

import tfrec_attn  # noqa: F401  (before TensorFlow: Keras 2 for TFRS)
from tfrec_attn.config import load_config
from tfrec_attn.data import load_dataset
from tfrec_attn.evaluation import format_table
from tfrec_attn.evaluation.two_stage import comparison_rows
from tfrec_attn.training import RankingRecipe, Trainer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--data", help="MovieLens directory (default: the cache or a download)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    config = load_config(args.config, args.set)                     # recipe: ranking
    dataset = load_dataset(args.data, dataset=config.data.dataset)
    recipe = RankingRecipe(config, dataset)                          # loads retrieval.run_dir
    trainer = Trainer(recipe, config, args.output_dir)
    result = trainer.run()                                           # select -> report
    print(format_table(comparison_rows(result.metrics["test"])))
    if trainer.chief:  # RUN/export/ranking/1 and RUN/export/recommend/1
        print("exported", *recipe.export(result.model, result.run.export_base))


if __name__ == "__main__":
    main()
