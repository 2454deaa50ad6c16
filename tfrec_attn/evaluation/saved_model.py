"""Score an exported SavedModel through its ``serving_default`` signature.

What users get is what is measured: raw string histories in, ranked string ids out,
ranked with :meth:`tfrec_attn.evaluation.Evaluator.evaluate_topk`.
"""

from __future__ import annotations

import os

import numpy as np

from tfrec_attn.data.sequences import history_batch
from tfrec_attn.evaluation.protocol import Evaluator


def resolve_saved_model(path: str) -> str:
    """A SavedModel dir, or a TF Serving model dir (``.../<name>/``) -> its newest version."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted((int(d) for d in os.listdir(path) if d.isdigit()), reverse=True) \
        if os.path.isdir(path) else []
    for version in versions:
        candidate = os.path.join(path, str(version))
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise FileNotFoundError(f"{path}: neither a SavedModel (saved_model.pb) nor a directory of "
                            "integer versions holding one")


def evaluate_saved_model(path: str, split, stage: str = "test", batch_size: int = 256) -> dict:
    import tensorflow as tf

    path = resolve_saved_model(path)
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    position = {item: i for i, item in enumerate(split.item_vocab)}
    evaluator = Evaluator(split, stage)

    def topk(users, histories):
        out = signature(history=tf.constant(history_batch(histories, split.item_vocab), tf.string))
        ids = out["item_ids"].numpy()
        return np.vectorize(lambda b: position.get(b.decode(), -1), otypes=[np.int64])(ids)

    result = evaluator.evaluate_topk(topk, batch_size=batch_size)
    result["saved_model"] = path
    return result
