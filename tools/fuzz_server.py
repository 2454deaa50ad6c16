#!/usr/bin/env python
"""Fuzz the local model server with malformed Predict requests (loopback only).

    python tools/fuzz_server.py --requests 10000                           # all models, gRPC and REST
    python tools/fuzz_server.py --models ranking --protocol rest --requests 300

Starts one ``tfrec-attn serve`` (gRPC + REST, ``--model_config_file``) in a subprocess over
small untrained exports: ``retrieval``, ``ranking`` and ``recommend`` (``--models``), and
sends each model ``--requests`` generated requests per protocol.

Requests follow each signature's inputs (read from the SavedModel loaded in process:
``structured_input_signature``), with hostile contents (unknown, negative, empty, non-UTF-8
and huge ids; NaN, infinite and negative ratings; int64-extreme timestamps and ages) and
targeted mistakes: right dtype and wrong rank, wrong dtypes, empty candidates, empty
batches, ratings / timestamps / user features whose shape differs from the history's,
missing and extra inputs, wrong signature names, batches at and over the row and history
limits. Fully random tensors still make part of them.

gRPC: random dtypes, ranks, shapes up to the message limit, non-UTF-8 bytes, empty
tensors, unknown/missing aliases and signatures, garbage tensor_content, batches over
the row / history limits. Every answer must be OK or INVALID_ARGUMENT.

REST: malformed and truncated JSON, deep nesting, wrong types, huge numbers, NaN and
Infinity literals, bad base64, odd URLs and versions (beyond int64, labels, unknown
models, other methods), missing or lying Content-Length, bodies over the size limit, raw
garbage on the socket. Every answer must be a JSON ``{"error": ...}`` with a 4xx status
(or 200): never a 5xx, a dropped connection or a server-side traceback.

Both: the server never dies, and afterwards a good request to every signature of every
model is answered exactly like the signature of the SavedModel loaded in process. The
server's peak RSS (``VmHWM``) is reported per phase and for one over-limit request (100,000
rows) per model and protocol. The generated requests stay cheap (a legal but costly one is
the at-limit probes' job); well-formed ones that are still rejected are listed as notes.

At-limit probes, after the fuzz: per model and protocol, one ``serving_default`` request of
1024 rows as long as the REST body limit allows (within every server limit, so it must be
answered OK), each on a fresh server (a new one after any probe not answered OK), then a
good request. The servers run under ``--server-memory-mb`` of address space, so a request
that asks for too much memory fails in the server, not in the machine.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import json
import os
import random
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from serving_fixtures import (  # noqa: E402
    ServerProcess,
    build_export,
    build_ranking_exports,
    memory_mb,
    reset_peak_rss,
)
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

MODELS = ("retrieval", "ranking", "recommend")
# Cases whose requests are well formed by construction (hostile values only): each should be
# answered OK. A rejection is reported (``well_formed_rejected``), not counted as a failure.
WELL_FORMED = ("plain", "oov", "empty_batch", "huge_batch", "broadcast")
NUM_ITEMS = 2000
SMALL = ["model.embedding_dim=16", "model.max_len=50"]
RETRIEVAL_SMALL = [*SMALL, "model.num_blocks=1"]
ROW_LIMIT, ITEM_LIMIT = 1024, 10_000  # the server's defaults (--max_batch_rows, --max_history_length)

DTYPES = [v for v in types_pb2.DataType.values() if v not in (0,)] + [999, -3]
JUNK_ALIASES = ["", "histo\xffry", "x" * 300, "history ", "user_id", "candidate", "inputs"]
WRONG_SIGNATURES = ["nope", "\u2603", "serving_default ", "SERVING_DEFAULT", "x" * 300, "tensorflow/serving/predict",
                    "rank", "explain", "user_embedding", "embed_items", "with_features", "explain_with_features",
                    "leave_one_out_drops"]
# A numpy dtype of another kind, per signature dtype (right rank, wrong dtype).
OTHER_DTYPES = {tf.string: [np.int64, np.float32, np.int32, np.bool_],
                tf.float32: [np.float64, np.int64, np.int32, np.float16, object],
                tf.int64: [np.int32, np.float32, np.uint64, object]}

# Hostile values per kind of input.
ODD_IDS = [b"", b"", b"-1", b"-17", b"0", str(NUM_ITEMS).encode(), b"99999999999999999999", b" 1", b"1.0", b"1e3",
           b"\xff\xfe\x00", b"\x00", "\u2603".encode(), b"F", b"other", b"[OOV]", b"[PAD]"]
RATINGS = [1.0, 2.0, 3.0, 4.0, 5.0, 3.5, 0.0, -0.0, -1.0, 6.0, 1e38, -1e38, 1e-45, float("nan"), float("inf"),
           float("-inf")]
INT64S = [893286638, 880000000, 30, 0, 0, -1, 1, 7, 200, -(1 << 63), (1 << 63) - 1, 1 << 40, -(1 << 40)]
USER_STRINGS = {"user_gender": [b"F", b"M", b"", b"X", b"f"], "user_occupation": [b"other", b"writer", b"", b"none"],
                "user_zip": [b"10001", b"0", b"9", b"", b"abcde", b"-1"]}


def random_bytes(rng, n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def hostile_value(rng, alias, dtype, ids):
    """One value for input ``alias`` of ``dtype``: mostly plausible, often hostile."""
    if dtype == tf.string:
        pool = USER_STRINGS.get(alias)
        if pool and rng.random() < 0.7:
            return rng.choice(pool)
        kind = rng.random()
        if kind < 0.55:
            return rng.choice(ids).encode()
        if kind < 0.97:
            return rng.choice(ODD_IDS)
        return random_bytes(rng, rng.choice([1, 8, 300]))
    if dtype.is_floating:
        return rng.uniform(1, 5) if rng.random() < 0.3 else rng.choice(RATINGS)
    if dtype.is_integer:
        return rng.randrange(-(1 << 63), 1 << 63) if rng.random() < 0.1 else rng.choice(INT64S)
    return rng.random() < 0.5


def hostile_array(rng, alias, spec, dims, ids):
    """A numpy array of the signature's dtype and ``dims``, of hostile values."""
    count = int(np.prod(dims)) if dims else 1
    values = [hostile_value(rng, alias, spec.dtype, ids) for _ in range(count)]
    if spec.dtype == tf.string:
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(dims)
    return np.array(values, dtype=spec.dtype.as_numpy_dtype).reshape(dims)


def filled(spec, dims, value=None):
    """A cheap array of ``dims`` (over-limit requests): one plausible value everywhere."""
    if spec.dtype == tf.string:
        return np.full(dims, b"1" if value is None else value, dtype=object)
    return np.full(dims, 3 if value is None else value, dtype=spec.dtype.as_numpy_dtype)


def input_dims(alias, spec, rows, history, candidates):
    """The shape an input takes in a well-formed request: [B], [B, H] or [B, C]."""
    if spec.shape.rank == 1:
        return [rows]
    return [rows, candidates if alias == "candidates" else history]


# -- request plans: signature + arrays, encoded for either protocol -----------------------------
class Plan:
    """A generated request before encoding: ``signature`` (None: the default), ``arrays``
    (alias -> numpy array), ``case`` (what it tries), ``encodings`` (alias -> how to encode
    it over gRPC: ``encode_tensor``), ``output_filter`` (gRPC)."""

    def __init__(self, signature, case):
        self.signature = signature
        self.case = case
        self.arrays = {}
        self.encodings = {}
        self.output_filter = []


def plan_request(rng, model, ids):
    """A request following the model's signatures, with one targeted mistake (or none)."""
    signatures = model["signatures"]
    kind = rng.random()
    if kind < 0.06:
        signature = rng.choice(WRONG_SIGNATURES)
        if signature in signatures:
            signature = "nope"
    else:
        signature = rng.choice(sorted(signatures))
    specs = signatures.get(signature) or signatures["serving_default"]
    case = rng.choices(["plain", "oov", "empty_candidates", "empty_batch", "wrong_rank", "wrong_dtype", "missing",
                        "extra", "batch_mismatch", "width_mismatch", "over_rows", "over_items", "huge_batch",
                        "bad_encoding", "broadcast", "output_filter"],
                       [16, 6, 5, 4, 8, 8, 5, 5, 6, 8, 3, 3, 3, 8, 4, 3])[0]
    if kind < 0.06:
        case = "wrong_signature"
    plan = Plan(None if signature == "serving_default" and rng.random() < 0.3 else signature, case)
    rows = rng.choice([1, 1, 2, 3, 5, 16])
    history = rng.choice([0, 1, 2, 5, 20, 60, 300])
    candidates = rng.choice([1, 1, 3, 10, 40])
    if case == "empty_candidates":
        candidates = 0
    elif case == "empty_batch":
        rows = 0
    elif case == "huge_batch":  # many rows within the limit; short rows (the cost stays small)
        rows, history, candidates = rng.choice([1000, ROW_LIMIT]), rng.choice([0, 1, 2]), rng.choice([1, 2])
    for alias, spec in specs.items():
        dims = input_dims(alias, spec, rows, history, candidates)
        if case == "huge_batch" or rows * max(dims[1:] or [1]) > 4096:
            plan.arrays[alias] = filled(spec, dims, hostile_value(rng, alias, spec.dtype, ids))
        elif case == "oov" and spec.dtype == tf.string:
            plan.arrays[alias] = filled(spec, dims, rng.choice(ODD_IDS[:8]))
        else:
            plan.arrays[alias] = hostile_array(rng, alias, spec, dims, ids)
    aliases = sorted(specs)
    target = rng.choice(aliases)
    spec = specs[target]
    if case == "wrong_rank":
        rank = rng.choice([r for r in (0, 1, 2, 3) if r != spec.shape.rank])
        dims = [rows, history, 2][:rank]
        plan.arrays[target] = hostile_array(rng, target, spec, dims, ids)
    elif case == "wrong_dtype":
        dtype = rng.choice(OTHER_DTYPES.get(spec.dtype, [np.int64]))
        array = plan.arrays[target]
        plan.arrays[target] = (array.astype(str).astype(object) if dtype is object and spec.dtype != tf.string
                               else np.zeros(array.shape, dtype))
    elif case == "missing":
        del plan.arrays[target]
    elif case == "extra":
        others = {a for s in signatures.values() for a in s} - set(specs)
        extra = rng.choice(sorted(others) + JUNK_ALIASES)
        plan.arrays[extra] = np.full([rows, 1], b"1", dtype=object)
    elif case == "batch_mismatch":
        dims = list(plan.arrays[target].shape)
        dims[0] = rng.choice([d for d in (0, 1, 2, 7) if d != rows])
        plan.arrays[target] = hostile_array(rng, target, spec, dims, ids)
    elif case == "width_mismatch":  # ratings / timestamps / features that do not match the history
        wide = [a for a in aliases if specs[a].shape.rank == 2 and a != "candidates"]
        target = rng.choice([a for a in wide if a != "history"] or wide or aliases)
        spec = specs[target]
        dims = list(plan.arrays[target].shape)
        dims[-1] = rng.choice([d for d in (0, 1, 3, history + 1) if d != dims[-1]])
        plan.arrays[target] = hostile_array(rng, target, spec, dims, ids)
    elif case == "over_rows":  # refused before any work
        dims = list(plan.arrays[target].shape)
        dims[0] = rng.choice([ROW_LIMIT + 1, 100_000])
        if len(dims) > 1:
            dims[1] = 1
        plan.arrays[target] = filled(spec, dims)
    elif case == "over_items":
        wide = [a for a in aliases if specs[a].shape.rank == 2] or aliases
        target = rng.choice(wide)
        dims = [1] * specs[target].shape.rank
        dims[-1] = ITEM_LIMIT + 1
        plan.arrays[target] = filled(specs[target], dims)
    elif case in ("bad_encoding", "broadcast"):
        plan.encodings[target] = case if case == "broadcast" else rng.choice(["content", "count", "values",
                                                                              "shape", "unknown_rank"])
    elif case == "output_filter":
        plan.output_filter.append(rng.choice(sorted(model["outputs"][signature]) + ["nope", ""])
                                  if signature in model["outputs"] else "nope")
    return plan


def encode_tensor(rng, array, how):
    """A numpy array -> ``TensorProto``, encoded as ``how`` says (None: as TensorFlow does)."""
    proto = tf.make_tensor_proto(array)
    if how is None:
        return proto
    if how == "broadcast" and array.size:  # one value for the whole shape (allowed by TF Serving)
        proto = tf.make_tensor_proto(array.reshape(-1)[:1])
        del proto.tensor_shape.dim[:]
        for d in array.shape:
            proto.tensor_shape.dim.add().size = d
    elif how == "content":  # tensor_content of the wrong length
        proto.tensor_content = random_bytes(rng, rng.choice([0, 1, 3, 9]))
    elif how == "count" and array.dtype == object:  # fewer or more strings than the shape needs
        del proto.string_val[:]
        proto.string_val.extend([b"1"] * rng.choice([0, 2, array.size + 1]))
    elif how == "values" and array.dtype != object:  # repeated values instead of tensor_content
        proto.tensor_content = b""
        field = "float_val" if array.dtype.kind == "f" else "int64_val"
        values = array.reshape(-1).tolist() + [0] * rng.choice([0, 0, 1])
        getattr(proto, field).extend(values)
    elif how == "shape":
        proto.tensor_shape.dim.add().size = rng.choice([-1, 0, 1 << 40, 2])
    elif how == "unknown_rank":
        proto.tensor_shape.unknown_rank = True
    return proto


def random_tensor(rng, limit_bytes):
    t = tensor_pb2.TensorProto()
    t.dtype = rng.choice(DTYPES) if rng.random() < 0.4 else types_pb2.DT_STRING
    rank = rng.choice([0, 1, 2, 2, 2, 3, 5])
    dims = [rng.choice([0, 1, 2, 3, 7, 50, 1000, -1, 1 << 40]) for _ in range(rank)]
    if rank and 0 <= min(dims) and max(dims) <= 1000 and np.prod(dims) > 50_000:
        dims[-1] = 7  # a legal request this large is the at-limit probes' job (one value fills any shape)
    if rng.random() < 0.02:
        t.tensor_shape.unknown_rank = True
    for d in dims:
        t.tensor_shape.dim.add().size = d
    kind = rng.random()
    if t.dtype == types_pb2.DT_STRING:
        n = rng.choice([0, 1, 2, 6, 100, 5000])
        if kind < 0.01:  # near the message limit
            t.string_val.extend([random_bytes(rng, 1024)] * (limit_bytes // 2048))
        else:
            t.string_val.extend([random_bytes(rng, rng.choice([0, 1, 5, 30])) if rng.random() < 0.5
                                 else f"{rng.randrange(NUM_ITEMS)}".encode() for _ in range(n)])
    elif kind < 0.3:
        t.tensor_content = random_bytes(rng, rng.choice([0, 3, 8, 64, 4096]))
    elif kind < 0.6:
        t.float_val.extend([rng.uniform(-1e30, 1e30) for _ in range(rng.choice([0, 1, 6]))])
    elif kind < 0.8:
        t.int64_val.extend([rng.randrange(-(1 << 62), 1 << 62) for _ in range(rng.choice([0, 1, 6]))])
    else:
        t.int_val.extend([rng.randrange(-(1 << 31), 1 << 31) for _ in range(rng.choice([0, 1, 6]))])
    return t


def random_request(rng, limit_bytes, model, ids):
    """``(PredictRequest, case)`` for ``model``: most follow its signatures (``plan_request``),
    the rest are random tensors under random aliases (case ``random``)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model["name"]
    if rng.random() < 0.75:
        plan = plan_request(rng, model, ids)
        if plan.signature is not None:
            request.model_spec.signature_name = plan.signature
        for alias, array in plan.arrays.items():
            request.inputs[alias].CopyFrom(encode_tensor(rng, array, plan.encodings.get(alias)))
        request.output_filter.extend(plan.output_filter)
        return request, plan.case
    signature = rng.choice(["", *sorted(model["signatures"]), *WRONG_SIGNATURES[:3]])
    if signature:
        request.model_spec.signature_name = signature
    aliases = sorted({a for s in model["signatures"].values() for a in s}) + JUNK_ALIASES[:3]
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3, 8])):
        request.inputs[rng.choice(aliases)].CopyFrom(random_tensor(rng, limit_bytes))
    if rng.random() < 0.1:
        request.output_filter.append(rng.choice(["scores", "item_ids", "attention", "nope", ""]))
    return request, "random"


# -- REST ---------------------------------------------------------------------------------------
def rest_urls(name):
    return [f"/v1/models/{name}:predict"] * 40 + [
        f"/v1/models/{name}/versions/1:predict", f"/v1/models/{name}/versions/0:predict",
        f"/v1/models/{name}/versions/99999999999999999999999:predict",
        f"/v1/models/{name}/versions/9223372036854775807:predict", f"/v1/models/{name}/versions/-1:predict",
        f"/v1/models/{name}/labels/stable:predict", "/v1/models/nope:predict", f"/v1/models/{name}",
        f"/v1/models/{name}/metadata", f"/v1/models/{name}/versions/99999999999999999999", "/",
        "/v1/models/%FF%FE:predict", f"/v1/models/{name}:predict?x=1", "/v1/models/../../etc/passwd",
        f"/v1/models/{name}:predict" + "/x" * 2000, "/v1/models/%E2%98%83:predict", f"//v1/models/{name}:predict",
        f"/v1/models/{name}:predict/", f"/v1/models/{name}:classify",
    ]


METHODS = ["POST"] * 30 + ["GET", "GET", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]


def random_json_value(rng, depth=0):
    kind = rng.random()
    if depth > 3 or kind < 0.35:
        return rng.choice(["i1", "", "\udcff", "x" * rng.choice([1, 300]), 1, -1, 1.5, 10 ** 30, -(10 ** 400),
                           float("nan"), float("inf"), float("-inf"), True, None, {"b64": "aTE="},
                           {"b64": "!!!"}, {"b64": 7}, {"b64": "aTE=", "x": 1}, {}, []])
    if kind < 0.8:
        return [random_json_value(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 3, 50]))]
    return {rng.choice(["history", "candidates", "history_ratings", "user_age", "x", ""]):
            random_json_value(rng, depth + 1) for _ in range(rng.choice([0, 1, 2]))}


def json_leaf(rng, value, hostile):
    """A numpy scalar -> JSON: bytes as text or ``{"b64": ...}``; sometimes a value of the
    wrong JSON type (``hostile``)."""
    if hostile and rng.random() < 0.05:
        return rng.choice(["3", 3, 3.5, None, True, [], {}, 10 ** 30, -(10 ** 19), {"b64": "!!"}, "\udcff"])
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8") if rng.random() < 0.9 else {"b64": base64.b64encode(value).decode()}
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value.item() if hasattr(value, "item") else value


def to_json_value(rng, array, hostile=False):
    """A numpy array -> nested JSON lists (``json_leaf`` for each value)."""
    if not isinstance(array, np.ndarray):  # a value of a 1-D array
        return json_leaf(rng, array, hostile)
    if array.ndim == 0:
        return json_leaf(rng, array[()], hostile)
    if array.ndim == 1 and array.dtype != object and not hostile:
        return array.tolist()
    return [to_json_value(rng, a, hostile) for a in array]


def json_lists(array):
    """A numpy array -> JSON lists; strings as UTF-8 text (``\ufffd`` for bad bytes)."""
    if array.dtype != object:
        return array.tolist()
    text = np.vectorize(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v), otypes=[object])
    return text(array).tolist() if array.size else array.tolist()


def plan_body(rng, model, ids):
    """``(JSON body, case)``: a body following the model's signatures: row format
    (``instances``, one object per row, or plain rows for a one-input signature) or columnar
    (``inputs``)."""
    plan = plan_request(rng, model, ids)
    hostile = rng.random() < 0.2
    case = plan.case
    body = {}
    if plan.signature is not None or rng.random() < 0.1:
        body["signature_name"] = plan.signature if plan.signature is not None else "serving_default"
    if rng.random() < 0.02:  # a signature name that is not a string
        body["signature_name"] = rng.choice([7, None, ["serving_default"], {"b64": "x"}])
        hostile = True
    big = sum(a.size for a in plan.arrays.values() if isinstance(a, np.ndarray)) > 20_000
    arrays = plan.arrays
    rows_format = rng.random() < 0.5 and all(isinstance(a, np.ndarray) and a.ndim >= 1 for a in arrays.values())
    if big:  # over-limit requests: encode fast (the values are all the same)
        return {**body, "inputs": {k: json_lists(v) for k, v in arrays.items()}}, plan.case
    if rows_format:
        batch = {a.shape[0] for a in arrays.values()}
        if len(arrays) == 1 and rng.random() < 0.7:
            body["instances"] = to_json_value(rng, next(iter(arrays.values())), hostile)
        elif len(batch) == 1:
            n = batch.pop()
            columns = {k: to_json_value(rng, v, hostile) for k, v in arrays.items()}
            body["instances"] = [{k: columns[k][i] for k in columns} for i in range(n)]
            if body["instances"] and rng.random() < 0.1:  # one row lacks an input, or has one more
                case = "row_keys"
                row = rng.choice(body["instances"])
                if row and rng.random() < 0.5:
                    del row[rng.choice(sorted(row))]
                else:
                    row["extra"] = 1
            if body["instances"] and rng.random() < 0.05:  # ragged: one row's history longer
                row = rng.choice(body["instances"])
                if isinstance(row.get("history"), list):
                    row["history"] = row["history"] + ["1"]
                    case = "ragged"  # "" pads the history, not its ratings / timestamps
        else:  # rows cannot be zipped: columnar
            rows_format = False
    if not rows_format:
        inputs = {k: to_json_value(rng, v, hostile) for k, v in arrays.items()}
        if len(inputs) == 1 and rng.random() < 0.3:
            body["inputs"] = next(iter(inputs.values()))  # the unnamed form of one input
        else:
            body["inputs"] = inputs
    return body, ("json_type" if hostile else case)


def random_rest_body(rng, max_body, model, ids):
    """``(bytes, case)`` of a request body: mostly JSON of the right outline with wrong details."""
    kind = rng.random()
    if kind < 0.05:
        return bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 10, 500]))), "garbage"
    if kind < 0.08:
        depth = rng.choice([10, 1000, 100_000])
        return b'{"instances": ' + b"[" * depth + b'"i1"' + b"]" * depth + b"}", "deep"
    if kind < 0.10:
        return b'{"instances": [[1' + b"0" * rng.choice([20, 400, 5000]) + b"]]}", "huge_number"
    if kind < 0.12:
        return rng.choice([b'{"instances": [[NaN, Infinity, -Infinity]]}',
                           b'{"inputs": {"history": [["1"]], "history_ratings": [[NaN, Infinity]]}}',
                           b'{"inputs": {"history": [["1"]], "candidates": [["2"]], "history_ratings": '
                           b'[[-Infinity]], "history_timestamps": [[1e400]], "user_age": [NaN], "user_gender": '
                           b'["F"], "user_occupation": [""], "user_zip": [""]}, "signature_name": "with_features"}']), "non_finite"
    if kind < 0.125:  # over the body limit
        return b'{"instances": [["' + b"a" * (max_body + 10) + b'"]]}', "over_body"
    if kind < 0.14:  # over the row limit (100,000 rows) but under the body limit
        return json.dumps({"instances": [["i1"]] * rng.choice([ROW_LIMIT + 1, 100_000])}).encode(), "over_rows"
    if kind < 0.15:  # over the history limit
        return json.dumps({"instances": [["i1"] * (ITEM_LIMIT + 1)]}).encode(), "over_items"
    if kind < 0.80:
        body, case = plan_body(rng, model, ids)
    else:
        body, case = {}, "random"
        if rng.random() < 0.4:
            body["signature_name"] = rng.choice(["", *sorted(model["signatures"]), "nope", 7, None])
        aliases = sorted({a for s in model["signatures"].values() for a in s}) + ["x"]
        if rng.random() < 0.5:
            body["inputs"] = {k: random_json_value(rng) for k in rng.sample(aliases, rng.choice([0, 1, 2, 3]))}
        elif rng.random() < 0.8:
            body[rng.choice(["instances", "inputs"])] = random_json_value(rng)
        else:
            body = random_json_value(rng)
    text = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    if rng.random() < 0.03:
        text, case = text[: rng.randrange(len(text) + 1)], "truncated"  # truncated
    return text, case


def rest_request(rng, port, max_body, model, ids, timeout=60.0):
    """Sends one generated request; returns ``(status or a string naming a failure, case,
    error message)``."""
    name = model["name"]
    kind = rng.random()
    if kind < 0.04:  # raw bytes on the socket: bad request lines, lying or missing lengths
        raw = rng.choice([
            b"GARBAGE\r\n\r\n", f"POST /v1/models/{name}:predict HTTP/1.1\r\n\r\n".encode(),
            f"POST /v1/models/{name}:predict HTTP/1.1\r\nContent-Length: -5\r\n\r\n".encode(),
            f"POST /v1/models/{name}:predict HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{{}}".encode(),
            f"POST /v1/models/{name}:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
            .encode(),
            f"GET /v1/models/{name} HTTP/1.1\r\n".encode() + b"X: " + b"y" * 70000 + b"\r\n\r\n",
            b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00",
            f"GET /v1/models/{name} HTTP/9.9\r\n\r\n".encode(),
        ])
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            try:
                sock.sendall(raw)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except OSError as error:
                if not data:
                    return f"no answer ({type(error).__name__})", "raw", ""
        if not data:
            return "no answer (closed)", "raw", ""
        if not data.startswith(b"HTTP/"):  # HTTP/0.9-style answer to an unparseable request line
            return "raw-0.9", "raw", ""
        return int(data.split(b" ", 2)[1]), "raw", data.partition(b"\r\n\r\n")[2][:200].decode("utf-8", "replace")
    method = rng.choice(METHODS)
    url = rng.choice(model["urls"])
    body, case = random_rest_body(rng, max_body, model, ids) if method in ("POST", "PUT", "PATCH") else (None, "url")
    status, message = http_status(port, method, url, body, timeout)
    case = "method" if method != "POST" else case if url == model["urls"][0] else "url"
    return status, case, message


def http_status(port, method, url, body, timeout=60.0):
    """One HTTP request: ``(status, error message)`` (an error must be a JSON ``{"error":
    str}``), or ``(a string naming the failure, "")``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, url, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if method != "HEAD" and response.status != 200:
            error = json.loads(data)
            if not isinstance(error, dict) or not isinstance(error.get("error"), str):
                return f"non-JSON error body ({response.status})", ""
            return response.status, error["error"]
        return response.status, ""
    except (OSError, http.client.HTTPException, ValueError) as error:
        return f"no answer ({type(error).__name__}: {str(error)[:60]})", ""
    finally:
        conn.close()


# -- probes: one request over / at the limits ----------------------------------------------------
def probe(server, protocol, model_name, signature, arrays, label):
    """One big request: its answer, size, seconds, and the server's peak RSS meanwhile."""
    reset_peak_rss(server.proc.pid)
    before = memory_mb(server.proc.pid)
    start = time.time()
    shapes = {k: list(v.shape) for k, v in arrays.items()}
    if protocol == "grpc":
        channel = grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 64 << 20),
                                                                ("grpc.max_receive_message_length", 256 << 20)])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for alias, array in arrays.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(array))
        size = request.ByteSize()
        start = time.time()
        try:
            stub.Predict(request, 300.0)
            answer = "OK"
        except grpc.RpcError as error:
            answer = f"{error.code().name}: {error.details()[:160]}"
        channel.close()
    else:
        inputs = {k: json_lists(v) for k, v in arrays.items()}
        body = json.dumps({"signature_name": signature, "inputs": inputs}).encode()
        size = len(body)
        start = time.time()
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=300)
        try:
            conn.request("POST", f"/v1/models/{model_name}:predict", body)
            response = conn.getresponse()
            data = response.read()
            answer = f"{response.status}" + ("" if response.status == 200 else
                                              f": {json.loads(data).get('error', '')[:160]}")
        except (OSError, http.client.HTTPException, ValueError) as error:
            answer = f"no answer ({type(error).__name__}: {str(error)[:60]})"
        finally:
            conn.close()
    seconds = time.time() - start
    peak = memory_mb(server.proc.pid).get("peak_rss_mb") if server.alive() else None  # {} once it exits
    alive = server.alive() and peak is not None
    ok = alive and answer.split(":")[0] in ("OK", "INVALID_ARGUMENT", "200", "400")
    return {"probe": label, "protocol": protocol, "model": model_name, "signature": signature, "shapes": shapes,
            "request_bytes": size, "answer": answer, "seconds": round(seconds, 3), "ok": ok, "server_alive": alive,
            "rss_before_mb": round(before["rss_mb"]),
            "peak_rss_during_mb": round(peak) if alive else None}


def probe_arrays(model, rows, width, candidates=None):
    """Inputs of ``rows`` rows for the model's ``serving_default``: history ``width`` items
    (one-character ids, so that JSON stays small), ``candidates`` per row."""
    specs = model["signatures"]["serving_default"]
    digits = np.array([str(d).encode() for d in range(1, 10)], dtype=object)
    arrays = {}
    for alias, spec in specs.items():
        dims = input_dims(alias, spec, rows, width, candidates or width)
        arrays[alias] = np.resize(digits, int(np.prod(dims))).reshape(dims) if spec.dtype == tf.string \
            else filled(spec, dims)
    return arrays


def over_limit_request(server, protocol, model, rows=100_000):
    """100,000 rows (~400 KB): refused before any work."""
    return probe(server, protocol, model["name"], "serving_default", probe_arrays(model, rows, 1, 1), "over_limit")


def at_limit_request(server, protocol, model, max_body):
    """The rows limit (1024), rows as long as the REST body limit allows (one-character ids):
    within every server limit, so it must be answered OK (or INVALID_ARGUMENT), not run the
    server out of memory."""
    candidates = 1000 if "candidates" in model["signatures"]["serving_default"] else 0
    width = max(1, max_body // (5 * ROW_LIMIT) - candidates - 200)  # '"1", ' per item
    return probe(server, protocol, model["name"], "serving_default",
                 probe_arrays(model, ROW_LIMIT, width, candidates or None), "at_limit")


# -- the fuzz loops --------------------------------------------------------------------------------
def fuzz_grpc(args, server, rng, model, ids):
    channel = grpc.insecure_channel(server.target, options=[
        ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    codes, cases = collections.Counter(), Cases()
    bad = []
    start = time.time()
    sent = 0
    died = None
    for sent in range(1, args.requests + 1):
        request, case = random_request(rng, args.limit_mb << 20, model, ids)
        try:
            stub.Predict(request, 60.0)
            code, message = "OK", ""
        except grpc.RpcError as error:
            code, message = error.code().name, error.details() or ""
            if error.code() not in (grpc.StatusCode.INVALID_ARGUMENT,):
                bad.append((code, message[:200], case, describe_request(request)))
        codes[code] += 1
        cases.add(case, code, message, describe_request(request))
        died = keep_going(f"gRPC {model['name']}", sent, start, codes, args, server)
        if died is not False:
            break
    channel.close()
    return phase_report(sent, start, codes, cases, bad, server, died)


def describe_request(request):
    """A short account of a gRPC request (for a bad answer)."""
    return {"signature": request.model_spec.signature_name,
            "inputs": {k: (types_pb2.DataType.Name(v.dtype) if v.dtype in types_pb2.DataType.values() else v.dtype,
                           [d.size for d in v.tensor_shape.dim]) for k, v in request.inputs.items()}}


def fuzz_rest(args, server, rng, model, ids, max_body):
    codes, cases = collections.Counter(), Cases()
    bad = []
    start = time.time()
    sent = 0
    died = None
    for sent in range(1, args.requests + 1):
        status, case, message = rest_request(rng, server.rest_port, max_body, model, ids)
        codes[status] += 1
        cases.add(case, status, message, None)
        # 501 (unknown method) and 505 (HTTP version) answer a client's protocol error.
        if status != "raw-0.9" and (not isinstance(status, int) or (status >= 500 and status not in (501, 505))):
            bad.append((status, message[:200], case))
        died = keep_going(f"REST {model['name']}", sent, start, codes, args, server)
        if died is not False:
            break
    return phase_report(sent, start, codes, cases, bad, server, died)


class Cases:
    """Answers per generated case: codes, the first error message of each (case, code), and
    the well-formed requests (``WELL_FORMED``) that were not answered OK."""

    def __init__(self):
        self.codes = collections.defaultdict(collections.Counter)
        self.examples = {}
        self.rejected = collections.Counter()
        self.rejected_examples = {}

    def add(self, case, code, message, request):
        self.codes[case][str(code)] += 1
        if message:
            self.examples.setdefault(f"{case} {code}", message[:160])
        if case in WELL_FORMED and code not in ("OK", 200):
            self.rejected[message[:160]] += 1
            self.rejected_examples.setdefault(message[:160], request)

    def report(self):
        return {"codes": {c: dict(sorted(v.items())) for c, v in sorted(self.codes.items())},
                "examples": dict(sorted(self.examples.items())),
                "well_formed_rejected": [{"count": n, "answer": m, "request": self.rejected_examples[m]}
                                         for m, n in self.rejected.most_common(5)]}


def phase_report(sent, start, codes, cases, bad, server, died):
    out = {"sent": sent, "seconds": round(time.time() - start),
           "codes": {str(k): v for k, v in sorted(codes.items(), key=str)}, "bad": len(bad), "bad_examples": bad[:5],
           "cases": cases.report()}
    if died:
        out["died"] = died
    else:
        out.update({k: round(v) for k, v in memory_mb(server.proc.pid).items()})
    return out


def keep_going(protocol, sent, start, codes, args, server):
    """False to go on; a message once the server died; None once time is up. Progress
    every 1,000 requests."""
    if not server.alive():
        return f"{protocol}: server died after {sent} requests"
    if time.time() - start > args.seconds:
        return None
    if sent % 1000 == 0:
        print(f"{protocol}: {sent} requests, {time.time() - start:.0f}s, {dict(codes)}", flush=True)
    return False


# -- the good request: exactly the in-process answer ------------------------------------------------
def good_inputs(specs, ids):
    """Well-formed inputs for any of the signatures: 2 rows, known and unknown ids, padding,
    plausible features."""
    history = np.array([[ids[1], ids[2], ids[3], "", "99999"], [ids[10], "", "", "", ""]], dtype=object)
    values = {"history": history, "candidates": np.array([[ids[4], ids[5], "99999"], [ids[1], ids[6], ids[7]]],
                                                         dtype=object),
              "history_ratings": np.array([[4, 5, 1, 0, 3], [float("nan"), 0, 0, 0, 0]], np.float32),
              "history_timestamps": np.array([[880000000, 880003600, 880100000, 0, 0], [893286638, 0, 0, 0, 0]],
                                             np.int64),
              "user_age": np.array([30, 0], np.int64), "user_gender": np.array(["F", ""], dtype=object),
              "user_occupation": np.array(["writer", "other"], dtype=object),
              "user_zip": np.array(["10001", ""], dtype=object),
              "item_ids": np.array([ids[1], "new-item"], dtype=object), "item_texts": np.array(["", ""], dtype=object)}
    return {alias: values[alias].astype(object) if spec.dtype == tf.string else values[alias].astype(
        spec.dtype.as_numpy_dtype) for alias, spec in specs.items()}


def same(got, want) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    if want.dtype == object:
        got = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(got) if got.size else got
        return got.shape == want.shape and bool((got == want).all())
    return got.shape == want.shape and np.array_equal(got.astype(want.dtype), want, equal_nan=True)


def check_good_requests(server, models, ids):
    """Every signature of every model, over gRPC and REST (row format): ``{model/signature:
    {"grpc": bool, "rest": bool}}``."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.target))
    results = {}
    for model in models:
        for signature, fn in sorted(model["functions"].items()):
            inputs = good_inputs(model["signatures"][signature], ids)
            expected = {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model["name"]
            request.model_spec.signature_name = signature
            for alias, array in inputs.items():
                request.inputs[alias].CopyFrom(tf.make_tensor_proto(array))
            try:
                answer = stub.Predict(request, 60.0)
                grpc_ok = sorted(answer.outputs) == sorted(expected) and all(
                    same(tf.make_ndarray(answer.outputs[k]), v) for k, v in expected.items())
            except grpc.RpcError as error:
                grpc_ok = f"{error.code().name}: {error.details()[:200]}"
            rows = [{k: json_lists(np.asarray(v[i], dtype=v.dtype)) for k, v in inputs.items()} for i in range(2)]
            conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
            try:
                conn.request("POST", f"/v1/models/{model['name']}:predict",
                             json.dumps({"signature_name": signature, "instances": rows}))
                response = conn.getresponse()
                data = json.loads(response.read())
                if response.status != 200:
                    rest_ok = f"{response.status}: {data}"
                else:
                    predictions = data["predictions"]
                    if len(expected) == 1:
                        got = {next(iter(expected)): predictions}
                    else:
                        got = {k: [p[k] for p in predictions] for k in expected}
                    rest_ok = all(same(got[k], v) for k, v in expected.items())
            finally:
                conn.close()
            results[f"{model['name']}/{signature}"] = {"grpc": grpc_ok, "rest": rest_ok}
    return results


# -- main ------------------------------------------------------------------------------------------
def build_models(tmp, names):
    """Exports the models asked for under ``tmp``; ``[{name, path, signatures, outputs, ...}]``."""
    from tfrec_attn.serving.config import write_model_server_config

    ids = [str(i) for i in range(NUM_ITEMS)]
    paths = {}
    if "retrieval" in names:
        paths["retrieval"] = build_export(tmp, ids, k=10, overrides=RETRIEVAL_SMALL)
    if {"ranking", "recommend"} & set(names):
        paths.update(build_ranking_exports(tmp, ids, overrides=SMALL, retrieval_overrides=RETRIEVAL_SMALL))
    models = []
    for name in names:
        loaded = tf.saved_model.load(paths[name])
        functions = dict(loaded.signatures)
        models.append({"name": name, "path": paths[name], "loaded": loaded, "functions": functions,
                       "signatures": {s: fn.structured_input_signature[1] for s, fn in functions.items()},
                       "outputs": {s: fn.structured_outputs for s, fn in functions.items()},
                       "urls": rest_urls(name)})
    config = write_model_server_config(os.path.join(tmp, "models.config"),
                                       [(name, os.path.join(tmp, name)) for name in names])
    return models, config, ids


def summary_lines(report):
    lines = []
    for protocol in ("grpc", "rest"):
        for name, phase in report.get(protocol, {}).items():
            lines.append(f"{protocol:<4} {name:<9} sent {phase['sent']:>6} in {phase['seconds']:>5}s  bad "
                         f"{phase['bad']:<3} codes {phase['codes']}  peak RSS {phase.get('peak_rss_mb', '?')} MB"
                         + (f"  DIED: {phase['died']}" if "died" in phase else ""))
    for p in report.get("probes", []):
        after = "" if "good_request_after" not in p else f"; then a good request exact: {p['good_request_after']}"
        lines.append(f"{p['protocol']:<4} {p['model']:<9} {p['probe']:<10} {p['shapes']} ({p['request_bytes']} B): "
                     f"{' '.join(p['answer'].split())[:110]}  {p['seconds']}s  peak RSS {p['peak_rss_during_mb']} MB"
                     f"{'' if p['server_alive'] else '  SERVER DIED'}{after}" + ("" if p["ok"] else "  <- BAD"))
    good = report.get("good_requests", {})
    wrong = [f"{k} {protocol}: {v[protocol]}" for k, v in good.items() for protocol in ("grpc", "rest")
             if v[protocol] is not True]
    lines.append(f"good requests after the fuzz answered exactly like in process: "
                 f"{len(good) * 2 - len(wrong)}/{len(good) * 2} (every signature, gRPC and REST)"
                 + "".join(f"\n  WRONG {w}" for w in wrong))
    log = report["server_log"]
    lines.append(f"server alive throughout the fuzz: {report['alive']}; server tracebacks: {log['tracebacks']}"
                 f"{'; fatal: ' + str(log['fatal']) if log['fatal'] else ''}; peak RSS (fuzz) "
                 f"{report.get('peak_rss_mb', '?')} MB; {report['seconds']}s in all")
    for protocol in ("grpc", "rest"):
        for name, phase in report.get(protocol, {}).items():
            for r in phase["cases"]["well_formed_rejected"]:
                lines.append(f"note: {protocol} {name}: {r['count']} well-formed request(s) rejected: {r['answer']}"
                             + (f" (e.g. {r['request']})" if r["request"] else ""))
    if "probe_servers_log" in report:
        log = report["probe_servers_log"]
        lines.append(f"at-limit probe servers: tracebacks {log['tracebacks']}; fatal: {log['fatal']}")
    lines.append(f"RESULT: {report['result']}")
    return lines


def at_limit_probes(args, models, models_config, ids, max_body, log_path):
    """``at_limit_request`` per model and protocol, on a fresh server (a new one after any
    probe not answered OK; its log is ``log_path.N``): each probe's answer, and whether the
    server then still answers a good request exactly. Returns (results, the logs)."""
    results, server, logs = [], None, []
    for protocol in ("grpc", "rest"):
        if args.protocol not in (protocol, "both"):
            continue
        for model in models:
            if server is None:
                logs.append(f"{log_path}.{len(logs)}")
                server = ServerProcess(None, "--model_config_file", models_config, rest=True,
                                       stderr=logs[-1], memory_limit_mb=args.server_memory_mb or None)
            result = at_limit_request(server, protocol, model, max_body)
            if result["server_alive"]:
                good = check_good_requests(server, [model], ids)
                result["good_request_after"] = all(v is True for r in good.values() for v in r.values())
                result["ok"] &= result["good_request_after"]
            print(f"at-limit probe: {result}", flush=True)
            results.append(result)
            if not result["ok"]:
                server.stop()
                server = None
    if server is not None:
        server.stop()
    return results, logs


def server_log_report(*paths):
    """Tracebacks and fatal lines in server logs."""
    log = ""
    for path in paths:
        with open(path, errors="replace") as handle:
            log += handle.read()
    out = {"tracebacks": log.count("Traceback"),
           "fatal": [line[:200] for line in log.splitlines() if "terminate called" in line or "Fatal" in line][:5]}
    if out["tracebacks"]:
        at = log.index("Traceback")
        out["first_traceback"] = log[max(0, at - 300): at + 3000]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000, help="per model and protocol")
    parser.add_argument("--seconds", type=float, default=1800,
                        help="per model and protocol: stop early after this long")
    parser.add_argument("--protocol", choices=("grpc", "rest", "both"), default="both")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-mb", type=int, default=8, help="largest gRPC message sent (server accepts 64)")
    parser.add_argument("--server-memory-mb", type=int, default=8192,
                        help="the server's address-space cap (RLIMIT_AS); 0 = none")
    parser.add_argument("--no-probes", action="store_true", help="skip the over-limit and at-limit requests")
    parser.add_argument("--server-log", help="keep the servers' stderr here (default: a temporary file)")
    parser.add_argument("--out", help="append the report as one JSON line to this file")
    args = parser.parse_args(argv)

    from tfrec_attn.serving.rest import RestOptions

    began = time.time()
    max_body = RestOptions().max_body_bytes
    rng = random.Random(args.seed)
    names = [m for m in MODELS if m in args.models]
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "models": names, "requests_per_model_and_protocol": args.requests,
              "seed": args.seed, "server_memory_mb": args.server_memory_mb or None, "probes": []}
    with tempfile.TemporaryDirectory() as tmp:
        models, models_config, ids = build_models(tmp, names)
        log_path = args.server_log or os.path.join(tmp, "server.log")
        server = ServerProcess(None, "--model_config_file", models_config, rest=True, stderr=log_path,
                               memory_limit_mb=args.server_memory_mb or None)
        report["rss_after_start_mb"] = round(memory_mb(server.proc.pid)["rss_mb"])
        peak = 0.0
        ok = True
        for protocol in ("grpc", "rest"):
            if args.protocol not in (protocol, "both"):
                continue
            report[protocol] = {}
            for model in models:
                if not server.alive():
                    break
                reset_peak_rss(server.proc.pid)
                if protocol == "grpc":
                    phase = fuzz_grpc(args, server, rng, model, ids)
                else:
                    phase = fuzz_rest(args, server, rng, model, ids, max_body)
                report[protocol][model["name"]] = phase
                peak = max(peak, phase.get("peak_rss_mb", 0))
                ok &= not phase["bad"] and "died" not in phase
                if not args.no_probes and server.alive():
                    result = over_limit_request(server, protocol, model)
                    report["probes"].append(result)
                    peak = max(peak, result["peak_rss_during_mb"] or 0)
                    ok &= result["ok"]
        alive = server.alive()
        report["good_requests"] = check_good_requests(server, models, ids) if alive else {}
        correct = alive and all(v is True for r in report["good_requests"].values() for v in r.values())
        alive = server.alive()
        if alive:
            peak = max(peak, memory_mb(server.proc.pid)["peak_rss_mb"])
        server.stop()
        report["server_log"] = server_log_report(log_path)
        if not args.no_probes:
            results, logs = at_limit_probes(args, models, models_config, ids, max_body, log_path + ".probe")
            report["probes"] += results
            ok &= all(r["ok"] for r in results)
            report["probe_servers_log"] = server_log_report(*logs)
    report.update(alive=alive, good_request_correct=correct, peak_rss_mb=round(peak),
                  seconds=round(time.time() - began))
    ok = ok and alive and correct and not report["server_log"]["tracebacks"] and not report["server_log"]["fatal"]
    report["result"] = "PASS" if ok else "FAIL"
    print(json.dumps(report, indent=2, default=str))
    print("\n".join(summary_lines(report)))
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(json.dumps(report, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
