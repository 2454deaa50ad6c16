"""A gRPC client for our models on TF Serving (or on ``tfrec-attn serve``).

    >>> from tfrec_attn.serving.client import RecommenderClient
    >>> with RecommenderClient("localhost:8500", model_name="retrieval") as client:
    ...     client.recommend(["50", "172", "133"], k=10)
    [("181", 7.31), ("100", 7.02), ...]

Uses only ``tensorflow-serving-api`` stubs and ``grpcio``: a deadline on every call, and
retries on ``UNAVAILABLE`` only (a server down or restarting, or a full batch queue) by
gRPC's own retry policy (the channel's service config, gRFC A6: exponential backoff with
jitter, within the call's deadline). What still fails, and every other error, is raised as
:class:`ServingError`.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfrec_attn.errors import TfrecAttnError


class ServingError(TfrecAttnError, RuntimeError):
    """A call failed; ``code`` is the gRPC status code."""

    def __init__(self, code, details):
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")


class Recommendation(tuple):
    """One recommended item: an ``(item_id, score)`` pair, with what a ``recommend`` model
    (retrieval + ranking) adds: ``rating`` (predicted, None from a retrieval model) and
    ``because``, the history items that explain it as ``[(item_id, score drop), ...]``: the
    items whose removal lowers the ranker's score of it the most, with the drop (leave one
    out), and ``attention``, the ranker's own account: ``[(item_id, attention share), ...]``
    (both empty from a retrieval model)."""

    def __new__(cls, item_id: str, score: float, rating: float | None = None, because=(), attention=()):
        pair = super().__new__(cls, (item_id, score))
        pair.rating = rating
        pair.because = list(because)
        pair.attention = list(attention)
        return pair

    @property
    def item_id(self) -> str:
        return self[0]

    @property
    def score(self) -> float:
        return self[1]


class Ratings(NamedTuple):
    """A ``rating`` model's answer for one user: a rating per item, and whether the model had
    training ratings of the user."""

    ratings: list
    known_user: bool


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _context(batch: np.ndarray, history, ratings, timestamps, user) -> dict:
    """The ``with_features`` inputs of a ``recommend``/``ranking`` model for ``batch``: per-event
    ratings and timestamps right-padded like the history (0 = unknown), one user row each."""
    single = not (history and isinstance(history[0], (list, tuple, np.ndarray)))

    def rows(values, dtype):
        out = np.zeros(batch.shape, dtype)
        if values is not None:
            for row, v in enumerate([values] if single else values):
                v = np.asarray(v, dtype)
                if len(v) != len(([history] if single else history)[row]):
                    raise ValueError(f"row {row}: {len(v)} ratings/timestamps for "
                                     f"{len(([history] if single else history)[row])} history items")
                out[row, :len(v)] = v
        return out

    users = [user or {}] * len(batch) if single or isinstance(user, dict) or user is None else list(user)
    return {"history_ratings": rows(ratings, np.float32), "history_timestamps": rows(timestamps, np.int64),
            "user_age": np.array([int(u.get("age") or 0) for u in users], np.int64),
            "user_gender": np.array([str(u.get("gender", "")) for u in users], object),
            "user_occupation": np.array([str(u.get("occupation", "")) for u in users], object),
            "user_zip": np.array([str(u.get("zip", "")) for u in users], object)}


def _as_batch(histories) -> np.ndarray:
    """A list of ids (one user) or of lists (a batch) -> right-padded string matrix."""
    if histories and isinstance(histories[0], (list, tuple, np.ndarray)):
        rows = [[str(i) for i in h] for h in histories]
    else:
        rows = [[str(i) for i in histories]]
    width = max(1, max(len(r) for r in rows))
    return np.array([r + [""] * (width - len(r)) for r in rows], dtype=object)


# The services whose calls are retried: every call the client makes.
RETRIED_SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")
MAX_RETRIES = 4  # gRPC caps a retry policy's maxAttempts at 5 (gRFC A6), the first attempt included
_MESSAGE_BYTES = 64 << 20


def service_config(retries: int, backoff: float) -> dict:
    """The channel's gRPC service config: ``retries`` extra attempts on UNAVAILABLE, the first
    after ``backoff`` seconds, each next one after twice the previous (x0.8-1.2 jitter, gRPC's);
    no retry policy for ``retries=0``.

    Args:
        retries: int. In [0, ``MAX_RETRIES``].
        backoff: float. Seconds, >= 0.001 (gRPC reads durations in milliseconds).
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"retries={retries!r} must be an integer in [0, {MAX_RETRIES}] (gRPC makes at most "
                         f"{MAX_RETRIES + 1} attempts of a call)")
    method = {"name": [{"service": service} for service in RETRIED_SERVICES]}
    if retries:
        if not backoff >= 0.001:
            raise ValueError(f"backoff={backoff!r} must be >= 0.001 seconds")
        method["retryPolicy"] = {
            "maxAttempts": retries + 1, "initialBackoff": f"{backoff:.3f}s",
            "maxBackoff": f"{backoff * 2 ** (retries - 1):.3f}s", "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"]}
    return {"methodConfig": [method]}


class RecommenderClient:
    """Args:
        target: str. ``host:port`` of the gRPC endpoint.
        model_name: str.
        version: int or None. Pin a version (default: the server's latest).
        timeout: float. Deadline of a call in seconds, its retries included (past it the
            call ends with DEADLINE_EXCEEDED).
        retries: int. Extra attempts on UNAVAILABLE, 0 to ``MAX_RETRIES`` (gRPC's limit).
        backoff: float. First retry delay in seconds (doubles, with gRPC's jitter).
    """

    def __init__(self, target: str, model_name: str = "retrieval", version: int | None = None,
                 timeout: float = 10.0, retries: int = 3, backoff: float = 0.1):
        config = service_config(retries, backoff)
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", _MESSAGE_BYTES), ("grpc.max_send_message_length", _MESSAGE_BYTES),
            ("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config)),
            # a call is retried only while its request fits the retry buffer (256 KiB by default)
            ("grpc.per_rpc_retry_buffer_size", _MESSAGE_BYTES)])
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.model_name = model_name
        self.version = version
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._signatures = None  # the model's signatures' inputs, asked on first need

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.channel.close()

    def _spec(self, spec, signature: str | None = None):
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = self.version
        if signature:
            spec.signature_name = signature

    def _call(self, method, request):
        """One call; the channel's retry policy retries UNAVAILABLE."""
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code(), error.details()) from None

    def predict(self, inputs: dict, signature: str = "serving_default") -> dict[str, np.ndarray]:
        """Raw Predict: numpy inputs by alias -> numpy outputs by name."""
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self.predictions.Predict, request)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def recommend(self, history, k: int | None = None, *, ratings=None, timestamps=None, user: dict | None = None):
        """Top items for one history (list of ids) or a batch (list of lists).

        Returns a list of :class:`Recommendation` (``(item_id, score)`` pairs; from a
        ``recommend`` model also ``.rating`` and ``.because``) for one history, or a list of
        such lists. ``k`` cuts the export's K (it cannot raise it).

        A ``recommend`` model also reads what else is known (its ``with_features``
        signature): ``ratings`` and ``timestamps`` (seconds) aligned with ``history``, and
        ``user`` = ``{"age": int, "gender": str, "occupation": str, "zip": str}`` (one dict,
        or a list of dicts for a batch); anything left out is unknown. A retrieval model
        with a rating-aware history (its ``serving_default`` takes ``history_ratings``)
        reads ``ratings`` there, and unknown ratings when they are left out.
        """
        batch = _as_batch(history)
        inputs = {"history": batch}
        if "history_ratings" in self._signature_inputs("serving_default"):  # a rating-aware retrieval model
            if timestamps is not None or user is not None:
                raise ValueError(f"model {self.model_name!r} reads the history and its ratings only "
                                 "(no timestamps or user features)")
            inputs["history_ratings"] = _context(batch, history, ratings, None, None)["history_ratings"]
            out = self.predict(inputs)
        elif ratings is not None or timestamps is not None or user is not None:
            if not self._signature_inputs("with_features"):
                raise ValueError(f"model {self.model_name!r} reads the history's items alone: it takes no "
                                 "ratings, timestamps or user features")
            inputs.update(_context(batch, history, ratings, timestamps, user))
            out = self.predict(inputs, "with_features")
        else:
            out = self.predict(inputs)
        results = []
        for row, (ids, scores) in enumerate(zip(out["item_ids"], out["scores"])):
            pairs = []
            for col, (item, score) in enumerate(zip(ids, scores)):
                if not item or not np.isfinite(score):
                    continue
                rating = float(out["rating"][row, col]) if "rating" in out else None
                because, attention = ([(_text(b), float(w)) for b, w in zip(out[ids_key][row, col],
                                                                              out[values_key][row, col]) if b]
                                      if ids_key in out else ()
                                      for ids_key, values_key in (("because_ids", "because_drops"),
                                                                  ("attention_ids", "attention_weights")))
                pairs.append(Recommendation(_text(item), float(score), rating, because, attention))
            results.append(pairs[:k] if k else pairs)
        single = not (history and isinstance(history[0], (list, tuple, np.ndarray)))
        return results[0] if single else results

    def ratings(self, user_id: str, item_ids) -> Ratings:
        """A ``rating`` model's predicted ratings of ``item_ids`` for the user ``user_id``, in
        their order, and whether the model knows the user (one without training ratings gets
        each item's mean over every user)."""
        items = np.asarray([str(i) for i in item_ids], object)
        out = self.predict({"user_id": np.full(len(items), str(user_id), object), "item_id": items})
        return Ratings([float(r) for r in out["rating"]], bool(out["known_user"].all()))

    def rank(self, history, candidates) -> list[tuple[str, float]]:
        """Scores ``candidates`` (ids) for one history, best first (unknown ids last, -inf)."""
        out = self.predict(self._with_ratings("rank", {"history": _as_batch(history),
                                                       "candidates": _as_batch(candidates)}), "rank")
        pairs = [(str(c), float(s)) for c, s in zip(candidates, out["scores"][0])]
        return sorted(pairs, key=lambda p: -p[1])

    def explain(self, history, candidates, top: int = 3) -> dict[str, list[tuple[str, float]]]:
        """For each candidate, the history items that push its score up the most.

        Returns ``{candidate: [(history_item, contribution), ...]}``: the ``top`` largest
        positive contributions per candidate (a candidate's contributions sum to 1 in
        absolute value; see the ``explain`` signature).
        """
        batch = _as_batch(history)
        out = self.predict(self._with_ratings("explain", {"history": batch, "candidates": _as_batch(candidates)}),
                           "explain")
        items = [i.decode("utf-8", "replace") if isinstance(i, bytes) else str(i) for i in batch[0]]
        result = {}
        for c, weights in zip(candidates, out["contributions"][0]):
            order = np.argsort(-weights)
            result[str(c)] = [(items[j], float(weights[j])) for j in order[:top] if weights[j] > 0]
        return result

    def _signature_inputs(self, signature: str) -> set:
        """The input aliases of one of the model's signatures (empty if it has none, or if the
        server answers no metadata: the history alone is then sent; asked once per client)."""
        if self._signatures is None:
            try:
                self._signatures = self.metadata()["signatures"]
            except ServingError as error:
                if error.code != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self._signatures = {}
        return set(self._signatures.get(signature, {}).get("inputs", {}))

    def _with_ratings(self, signature: str, inputs: dict) -> dict:
        """``inputs`` plus unknown ``history_ratings`` when ``signature`` takes them (a
        rating-aware retrieval model's ``rank`` and ``explain``)."""
        if "history_ratings" in self._signature_inputs(signature):
            inputs["history_ratings"] = np.zeros(inputs["history"].shape, np.float32)
        return inputs

    def metadata(self) -> dict:
        """Signature names with their input and output aliases, dtypes and shapes."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec)
        response = self._call(self.predictions.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)

        def describe(tensors):
            return {k: {"dtype": tf.dtypes.as_dtype(v.dtype).name,
                        "shape": [d.size for d in v.tensor_shape.dim]} for k, v in tensors.items()}

        return {"model": response.model_spec.name, "version": response.model_spec.version.value,
                "signatures": {name: {"inputs": describe(s.inputs), "outputs": describe(s.outputs)}
                               for name, s in signatures.signature_def.items()
                               if not name.startswith("__")}}

    def status(self) -> dict[int, str]:
        """Version -> state name (``AVAILABLE``, ``END``, ...)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self.models.GetModelStatus, request)
        states = get_model_status_pb2.ModelVersionStatus.State
        return {s.version: states.Name(s.state) for s in response.model_version_status}
