#!/usr/bin/env python
"""Train the transformer two-tower retrieval model from a config.

    python training/train_retrieval.py training/configs/ml100k_retrieval.yaml \
        --data ../shared/data/ml-100k --output-dir runs/retrieval --set model.dropout=0.3

Same as ``tfrec-attn train CONFIG --data DIR --output-dir DIR``: this script is the
place to start when you want your own Keras training script on top of the library.
"""

import sys

import tfrec_attn  # noqa: F401  (before TensorFlow: Keras 2 for TFRS)
from tfrec_attn.app.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
