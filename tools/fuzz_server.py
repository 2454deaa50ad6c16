#!/usr/bin/env python
"""Fuzz the local model server with malformed Predict requests (loopback only).

    python tools/fuzz_server.py --requests 10000 --seconds 600

Starts ``tfrec-attn serve`` in a subprocess over a small export, sends generated
requests (random dtypes, ranks, shapes up to the message limit, non-UTF-8 bytes, empty
tensors, unknown/missing aliases and signatures, garbage tensor_content), and checks
that: the server never dies, every answer is OK or INVALID_ARGUMENT, and a good request
afterwards is answered exactly like the in-process signature.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from serving_fixtures import ServerProcess, build_export  # noqa: E402
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

DTYPES = [v for v in types_pb2.DataType.values() if v not in (0,)] + [999, -3]
ALIASES = ["history", "history", "history", "candidates", "", "histo\xffry", "x" * 300]
SIGNATURES = ["", "serving_default", "serving_default", "rank", "explain", "user_embedding", "nope", "\u2603"]


def random_bytes(rng, n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def random_tensor(rng, limit_bytes):
    t = tensor_pb2.TensorProto()
    t.dtype = rng.choice(DTYPES) if rng.random() < 0.4 else types_pb2.DT_STRING
    rank = rng.choice([0, 1, 2, 2, 2, 3, 5])
    dims = [rng.choice([0, 1, 2, 3, 7, 50, 1000, -1, 1 << 40]) for _ in range(rank)]
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
                                 else f"{rng.randrange(2000)}".encode() for _ in range(n)])
    elif kind < 0.3:
        t.tensor_content = random_bytes(rng, rng.choice([0, 3, 8, 64, 4096]))
    elif kind < 0.6:
        t.float_val.extend([rng.uniform(-1e30, 1e30) for _ in range(rng.choice([0, 1, 6]))])
    elif kind < 0.8:
        t.int64_val.extend([rng.randrange(-(1 << 62), 1 << 62) for _ in range(rng.choice([0, 1, 6]))])
    else:
        t.int_val.extend([rng.randrange(-(1 << 31), 1 << 31) for _ in range(rng.choice([0, 1, 6]))])
    return t


def valid_shaped_strings(rng, rows, width):
    """A well-formed string tensor with hostile contents (non-UTF-8, empty, huge ids)."""
    values = [rng.choice([b"", b"1", b"\xff\xfe\x00", random_bytes(rng, rng.choice([1, 8, 200])),
                          f"{rng.randrange(3000)}".encode()]) for _ in range(rows * width)]
    return tf.make_tensor_proto(np.array(values, dtype=object).reshape(rows, width))


def random_request(rng, limit_bytes, model_name):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    if rng.random() < 0.4:  # structurally valid, hostile contents: reaches the model itself
        sig = rng.choice(["serving_default", "rank", "explain", "user_embedding"])
        request.model_spec.signature_name = sig
        rows = rng.choice([0, 1, 2, 5])
        request.inputs["history"].CopyFrom(valid_shaped_strings(rng, rows, rng.choice([0, 1, 3, 60])))
        if sig in ("rank", "explain") and rng.random() < 0.95:
            request.inputs["candidates"].CopyFrom(valid_shaped_strings(
                rng, rows if rng.random() < 0.9 else rows + 1, rng.choice([0, 1, 4])))
        return request
    sig = rng.choice(SIGNATURES)
    if sig:
        request.model_spec.signature_name = sig
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        request.inputs[rng.choice(ALIASES)].CopyFrom(random_tensor(rng, limit_bytes))
    if rng.random() < 0.1:
        request.output_filter.append(rng.choice(["scores", "item_ids", "nope", ""]))
    return request


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=900, help="stop early after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-mb", type=int, default=8, help="largest message sent (server accepts 64)")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ids = [str(i) for i in range(2000)]
        path = build_export(tmp, ids, k=10, overrides=["model.embedding_dim=16", "model.num_blocks=1",
                                                       "model.max_len=50"])
        good = np.array([["1", "2", "3", ""]], dtype=object)
        expected = tf.saved_model.load(path).signatures["serving_default"](history=tf.constant(good))
        server = ServerProcess(tmp + "/retrieval")
        channel = grpc.insecure_channel(server.target, options=[
            ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        codes = collections.Counter()
        bad = []
        start = time.time()
        sent = 0
        for sent in range(1, args.requests + 1):
            request = random_request(rng, args.limit_mb << 20, "retrieval")
            try:
                stub.Predict(request, 30.0)
                codes["OK"] += 1
            except grpc.RpcError as error:
                codes[error.code().name] += 1
                if error.code() not in (grpc.StatusCode.INVALID_ARGUMENT,):
                    bad.append((error.code().name, error.details()[:200]))
            if not server.alive():
                print(f"FAIL: server died after {sent} requests")
                return 1
            if time.time() - start > args.seconds:
                break
            if sent % 1000 == 0:
                print(f"{sent} requests, {time.time() - start:.0f}s, {dict(codes)}", flush=True)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "retrieval"
        request.inputs["history"].CopyFrom(tf.make_tensor_proto(good))
        answer = stub.Predict(request, 30.0)
        correct = (tf.make_ndarray(answer.outputs["item_ids"]) == expected["item_ids"].numpy()).all()
        alive = server.alive()
        server.stop()
    elapsed = time.time() - start
    print(f"sent {sent} malformed/random requests in {elapsed:.0f}s: {dict(codes)}")
    print(f"server alive: {alive}; good request afterwards answered correctly: {bool(correct)}")
    if bad:
        print(f"{len(bad)} answers were neither OK nor INVALID_ARGUMENT, e.g. {bad[:5]}")
    ok = alive and correct and not bad
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
