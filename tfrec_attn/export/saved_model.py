"""Atomic, versioned SavedModel publishing in TF Serving's layout."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import tensorflow as tf


def _signatures_only():
    """A scope in which ``tf.saved_model.save`` writes the module's variables, assets,
    signatures and ``tf.function`` attributes but not Keras' per-layer call traces.

    Our exports are read through their signatures and module functions (TF Serving,
    ``tf.saved_model.load``, ``TFSMLayer``), never revived as Keras layers, and tracing every
    layer's ``call`` for revival was most of an export's time (what ``model.save(...,
    save_traces=False)`` turns off for a Keras model)."""
    try:
        from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope
    except ImportError:  # another tf_keras layout: keep the traces
        return contextlib.nullcontext()
    return keras_option_scope(save_traces=False, in_tf_saved_model_scope=True)


def versions(model_dir: str) -> list[int]:
    """The integer version directories under ``model_dir`` (TF Serving's layout), sorted."""
    return sorted(int(d) for d in os.listdir(model_dir) if d.isdigit()) if os.path.isdir(model_dir) else []


def next_version(model_dir: str) -> int:
    """1 + the largest integer version directory under ``model_dir`` (1 if none)."""
    return max(versions(model_dir), default=0) + 1


def write_warmup_requests(path: str, model_name: str, requests: list[tuple[str, dict]]) -> str:
    """Writes ``assets.extra/tf_serving_warmup_requests``: a TFRecord of ``PredictionLog``.

    Args:
        requests: list of (signature_name, {input alias: numpy array}). TF Serving
            replays at most 1000 records before a version takes traffic.
    """
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    if len(requests) > 1000:
        raise ValueError(f"TF Serving replays at most 1000 warmup records, got {len(requests)}")
    target = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tf.io.TFRecordWriter(target) as writer:
        for signature, inputs in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature
            for alias, value in inputs.items():
                request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return target


def publish_saved_model(module: tf.Module, signatures: dict, base_path: str, model_name: str,
                        version: int | None = None, options: tf.saved_model.SaveOptions | None = None,
                        warmup: list | None = None, assets_extra_from: str | None = None) -> str:
    """Writes ``base_path/model_name/<version>/`` atomically and returns it.

    The SavedModel is written to a hidden temporary directory beside the target and then
    renamed into place, so a server polling ``base_path/model_name`` never sees a
    half-written version (TF Serving ignores non-integer directory names).
    ``assets_extra_from``: a version directory whose ``assets.extra`` (warmup requests)
    the new version reuses.
    """
    model_dir = os.path.join(base_path, model_name)
    os.makedirs(model_dir, exist_ok=True)
    version = next_version(model_dir) if version is None else int(version)
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists; versions are immutable, pick another")
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    try:
        with _signatures_only():
            tf.saved_model.save(module, tmp, signatures=signatures, options=options)
        if warmup:
            write_warmup_requests(tmp, model_name, warmup)
        if assets_extra_from and os.path.isdir(os.path.join(assets_extra_from, "assets.extra")):
            shutil.copytree(os.path.join(assets_extra_from, "assets.extra"), os.path.join(tmp, "assets.extra"))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a server may run as another user
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def export_retrieval(model, vocabulary, base_path: str, *, model_name: str = "retrieval", k: int = 100,
                     index: str = "brute_force", version: int | None = None, item_terms=None, profile=None,
                     **index_options) -> str:
    """Exports a trained retrieval model with its serving signatures; returns the version dir.

    ``item_terms``: (genres, words) ItemTerms that a multi-interest model's labels are
    written in (:func:`tfrec_attn.features.item_terms.item_terms`). ``profile``: the interest
    profile (a :class:`~tfrec_attn.models.interest_profile.ServedProfile`) served as ``profile``."""
    from tfrec_attn.export.signatures import RetrievalServingModule

    module = RetrievalServingModule(model, vocabulary, k=k, index=index, item_terms=item_terms, profile=profile,
                                    **index_options)
    options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]) if index == "scann" else None
    return publish_saved_model(module, module.signatures(), base_path, model_name, version, options,
                               warmup=retrieval_warmup(vocabulary, interests=module.num_interests > 1,
                                                       profile=profile is not None, ratings=module.reads_ratings))


def retrieval_warmup(vocabulary, lengths=(1, 10, 50, 200), batch_sizes=(1, 8), interests: bool = False,
                     profile: bool = False, ratings: bool = False) -> list:
    """Representative requests: real ids, several history lengths and batch sizes (with
    ``ratings``, the history signatures' requests carry ``history_ratings`` too)."""
    import numpy as np

    ids = np.asarray(vocabulary.item_ids, dtype=object)

    def with_ratings(inputs):
        if ratings:
            inputs["history_ratings"] = np.full(inputs["history"].shape, 4.0, np.float32)
        return inputs

    requests = []
    for batch in batch_sizes:
        for length in lengths:
            history = np.resize(ids, batch * length).reshape(batch, length).astype(object)
            requests.append(("serving_default", with_ratings({"history": history})))
    candidates = np.resize(ids, 8 * 20).reshape(8, 20).astype(object)
    requests.append(("embed_items", {"item_ids": np.resize(ids, 8).astype(object),
                                     "item_texts": np.array(["warmup text"] * 8, dtype=object)}))
    requests.append(("rank", with_ratings({"history": np.resize(ids, 8 * 50).reshape(8, 50).astype(object),
                                           "candidates": candidates})))
    if interests:
        requests.append(("interests", {"history": np.resize(ids, 50).reshape(1, 50).astype(object)}))
    if profile:
        requests.append(("profile", {"history": np.resize(ids, 50).reshape(1, 50).astype(object)}))
    return requests
