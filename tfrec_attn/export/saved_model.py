"""Atomic, versioned SavedModel publishing in TF Serving's layout."""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf


def next_version(model_dir: str) -> int:
    """1 + the largest integer version directory under ``model_dir`` (1 if none)."""
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()] if os.path.isdir(model_dir) else []
    return max(versions, default=0) + 1


def publish_saved_model(module: tf.Module, signatures: dict, base_path: str, model_name: str,
                        version: int | None = None, options: tf.saved_model.SaveOptions | None = None) -> str:
    """Writes ``base_path/model_name/<version>/`` atomically and returns it.

    The SavedModel is written to a hidden temporary directory beside the target and then
    renamed into place, so a server polling ``base_path/model_name`` never sees a
    half-written version (TF Serving ignores non-integer directory names).
    """
    model_dir = os.path.join(base_path, model_name)
    os.makedirs(model_dir, exist_ok=True)
    version = next_version(model_dir) if version is None else int(version)
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists; versions are immutable, pick another")
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    try:
        tf.saved_model.save(module, tmp, signatures=signatures, options=options)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def export_retrieval(model, vocabulary, base_path: str, *, model_name: str = "retrieval", k: int = 100,
                     index: str = "brute_force", version: int | None = None, **index_options) -> str:
    """Exports a trained retrieval model with its serving signatures; returns the version dir."""
    from tfrec_attn.export.signatures import RetrievalServingModule

    module = RetrievalServingModule(model, vocabulary, k=k, index=index, **index_options)
    options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]) if index == "scann" else None
    return publish_saved_model(module, module.signatures(), base_path, model_name, version, options)
