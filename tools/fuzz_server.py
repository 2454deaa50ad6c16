#!/usr/bin/env python
"""Fuzz the local model server with malformed Predict requests (loopback only).

    python tools/fuzz_server.py --requests 10000 --seconds 600             # gRPC and REST
    python tools/fuzz_server.py --protocol rest --requests 10000

Starts ``tfrec-attn serve`` (gRPC + REST) in a subprocess over a small export and sends
generated requests.

gRPC: random dtypes, ranks, shapes up to the message limit, non-UTF-8 bytes, empty
tensors, unknown/missing aliases and signatures, garbage tensor_content, batches over
the row / history limits. Every answer must be OK or INVALID_ARGUMENT.

REST: malformed and truncated JSON, deep nesting, wrong types, huge numbers, NaN and
Infinity literals, bad base64, odd URLs and versions (beyond int64, labels, unknown
models, other methods), missing or lying Content-Length, bodies over the size limit, raw
garbage on the socket. Every answer must be a JSON ``{"error": ...}`` with a 4xx status
(or 200): never a 5xx, a dropped connection or a server-side traceback.

Both: the server never dies, and a good request afterwards is answered exactly like the
in-process signature. The server's peak RSS (``VmHWM``) is reported per phase, and for
one over-limit request (100,000 rows) of each protocol.
"""

from __future__ import annotations

import argparse
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
from serving_fixtures import ServerProcess, build_export, memory_mb, reset_peak_rss  # noqa: E402
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
        over = rng.random()
        if over < 0.01:  # over the row limit: 1025 or 100,000 rows (~400 KB, as in the issue)
            rows = rng.choice([1025, 100_000])
            request.inputs["history"].CopyFrom(tf.make_tensor_proto(np.full((rows, 1), b"1", dtype=object)))
        elif over < 0.02:  # over the history limit
            rows = 1
            request.inputs["history"].CopyFrom(tf.make_tensor_proto(np.full((1, 10_001), b"1", dtype=object)))
        else:
            rows = rng.choice([0, 1, 2, 5])
            request.inputs["history"].CopyFrom(valid_shaped_strings(rng, rows, rng.choice([0, 1, 3, 60])))
        if sig in ("rank", "explain") and rows <= 5 and rng.random() < 0.95:
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


# -- REST ---------------------------------------------------------------------------------------
URLS = ["/v1/models/retrieval:predict"] * 40 + [
    "/v1/models/retrieval/versions/1:predict", "/v1/models/retrieval/versions/0:predict",
    "/v1/models/retrieval/versions/99999999999999999999999:predict",
    "/v1/models/retrieval/versions/9223372036854775807:predict", "/v1/models/retrieval/versions/-1:predict",
    "/v1/models/retrieval/labels/stable:predict", "/v1/models/nope:predict", "/v1/models/retrieval",
    "/v1/models/retrieval/metadata", "/v1/models/retrieval/versions/99999999999999999999", "/",
    "/v1/models/%FF%FE:predict", "/v1/models/retrieval:predict?x=1", "/v1/models/../../etc/passwd",
    "/v1/models/retrieval:predict" + "/x" * 2000, "/v1/models/%E2%98%83:predict", "//v1/models/retrieval:predict",
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
    return {rng.choice(["history", "candidates", "x", ""]): random_json_value(rng, depth + 1)
            for _ in range(rng.choice([0, 1, 2]))}


def random_rest_body(rng, max_body):
    """Bytes of a request body: mostly JSON of the right outline with wrong details."""
    kind = rng.random()
    if kind < 0.05:
        return bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 10, 500])))
    if kind < 0.08:
        depth = rng.choice([10, 1000, 100_000])
        return b'{"instances": ' + b"[" * depth + b'"i1"' + b"]" * depth + b"}"
    if kind < 0.10:
        return b'{"instances": [[1' + b"0" * rng.choice([20, 400, 5000]) + b"]]}"
    if kind < 0.12:
        return b'{"instances": [[NaN, Infinity, -Infinity]]}'
    if kind < 0.125:  # over the body limit
        return b'{"instances": [["' + b"a" * (max_body + 10) + b'"]]}'
    if kind < 0.14:  # over the row limit (100,000 rows) but under the body limit
        return json.dumps({"instances": [["i1"]] * rng.choice([1025, 100_000])}).encode()
    if kind < 0.15:  # over the history limit
        return json.dumps({"instances": [["i1"] * 10_001]}).encode()
    body = {}
    if rng.random() < 0.4:
        body["signature_name"] = rng.choice(["", "serving_default", "rank", "explain", "user_embedding",
                                             "embed_items", "nope", 7, None])
    shape = rng.random()
    if shape < 0.45:
        rows = rng.choice([0, 1, 2, 5])
        width = rng.choice([0, 1, 3, 60])
        named = rng.random() < 0.4
        instances = []
        for _ in range(rows):
            history = [rng.choice(["i1", "17", "", "\xff", f"{rng.randrange(3000)}", {"b64": "/w=="}])
                       for _ in range(rng.choice([width, width, width + 1]))]
            if named:
                row = {"history": history}
                if rng.random() < 0.5:
                    row["candidates"] = [str(rng.randrange(3000)) for _ in range(rng.choice([0, 2]))]
                if rng.random() < 0.1:
                    row["extra"] = 1
                instances.append(row)
            else:
                instances.append(history)
        body["instances"] = instances
    elif shape < 0.75:
        body["inputs"] = {k: random_json_value(rng) for k in rng.sample(["history", "candidates", "x"],
                                                                        rng.choice([0, 1, 2, 3]))}
    elif shape < 0.95:
        body[rng.choice(["instances", "inputs"])] = random_json_value(rng)
    else:
        body = random_json_value(rng)
    text = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    if rng.random() < 0.03:
        text = text[: rng.randrange(len(text) + 1)]  # truncated
    return text


def rest_request(rng, port, max_body, timeout=30.0):
    """Sends one generated request; returns its HTTP status, or a string naming a failure."""
    kind = rng.random()
    if kind < 0.04:  # raw bytes on the socket: bad request lines, lying or missing lengths
        raw = rng.choice([
            b"GARBAGE\r\n\r\n", b"POST /v1/models/retrieval:predict HTTP/1.1\r\n\r\n",
            b"POST /v1/models/retrieval:predict HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            b"POST /v1/models/retrieval:predict HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{}",
            b"POST /v1/models/retrieval:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            b"GET /v1/models/retrieval HTTP/1.1\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n",
            b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\xa5\x01\x00",
            b"GET /v1/models/retrieval HTTP/9.9\r\n\r\n",
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
                    return f"no answer ({type(error).__name__})"
        if not data:
            return "no answer (closed)"
        if not data.startswith(b"HTTP/"):  # HTTP/0.9-style answer to an unparseable request line
            return "raw-0.9"
        return int(data.split(b" ", 2)[1])
    method = rng.choice(METHODS)
    url = rng.choice(URLS)
    body = random_rest_body(rng, max_body) if method in ("POST", "PUT", "PATCH") else None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, url, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if method != "HEAD" and response.status != 200:
            error = json.loads(data)
            if not isinstance(error, dict) or not isinstance(error.get("error"), str):
                return f"non-JSON error body ({response.status})"
        return response.status
    except (OSError, http.client.HTTPException, ValueError) as error:
        return f"no answer ({type(error).__name__}: {str(error)[:60]})"
    finally:
        conn.close()


def over_limit_request(server, protocol, rows=100_000):
    """One request of ``rows`` rows: its answer, seconds, and the server's peak RSS meanwhile."""
    reset_peak_rss(server.proc.pid)
    before = memory_mb(server.proc.pid)
    start = time.time()
    if protocol == "grpc":
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(
            server.target, options=[("grpc.max_send_message_length", 64 << 20)]))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "retrieval"
        request.inputs["history"].CopyFrom(tf.make_tensor_proto(np.array([["i1"]] * rows, dtype=object)))
        try:
            stub.Predict(request, 60.0)
            answer = "OK"
        except grpc.RpcError as error:
            answer = f"{error.code().name}: {error.details()[:120]}"
        size = request.ByteSize()
    else:
        body = json.dumps({"instances": [["i1"]] * rows}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
        conn.request("POST", "/v1/models/retrieval:predict", body)
        response = conn.getresponse()
        answer = f"{response.status}: {json.loads(response.read()).get('error', '')[:120]}"
        conn.close()
        size = len(body)
    seconds = time.time() - start
    after = memory_mb(server.proc.pid)
    return {"protocol": protocol, "rows": rows, "request_bytes": size, "answer": answer, "seconds": round(seconds, 3),
            "rss_before_mb": round(before["rss_mb"]), "peak_rss_during_mb": round(after["peak_rss_mb"])}


def fuzz_grpc(args, server, rng, report):
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
        if not keep_going("gRPC", sent, start, codes, args, server, report):
            break
    report["grpc"] = {"sent": sent, "seconds": round(time.time() - start), "codes": dict(codes),
                      "bad": len(bad), "bad_examples": bad[:5], **memory_mb(server.proc.pid)}
    channel.close()
    return not bad


def keep_going(protocol, sent, start, codes, args, server, report) -> bool:
    """False once the server died (recorded in ``report``) or time is up; progress every 1,000."""
    if not server.alive():
        report["died"] = f"{protocol}: server died after {sent} requests"
        return False
    if time.time() - start > args.seconds:
        return False
    if sent % 1000 == 0:
        print(f"{protocol}: {sent} requests, {time.time() - start:.0f}s, {dict(codes)}", flush=True)
    return True


def fuzz_rest(args, server, rng, report, max_body):
    codes = collections.Counter()
    bad = []
    start = time.time()
    sent = 0
    for sent in range(1, args.requests + 1):
        status = rest_request(rng, server.rest_port, max_body)
        codes[status] += 1
        # 501 (unknown method) and 505 (HTTP version) answer a client's protocol error.
        if status != "raw-0.9" and (not isinstance(status, int) or (status >= 500 and status not in (501, 505))):
            bad.append(status)
        if not keep_going("REST", sent, start, codes, args, server, report):
            break
    report["rest"] = {"sent": sent, "seconds": round(time.time() - start),
                      "codes": {str(k): v for k, v in sorted(codes.items(), key=str)},
                      "bad": len(bad), "bad_examples": bad[:5], **memory_mb(server.proc.pid)}
    return not bad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000, help="per protocol")
    parser.add_argument("--seconds", type=float, default=900, help="per protocol: stop early after this long")
    parser.add_argument("--protocol", choices=("grpc", "rest", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-mb", type=int, default=8, help="largest gRPC message sent (server accepts 64)")
    parser.add_argument("--out", help="append the report as one JSON line to this file")
    args = parser.parse_args(argv)

    from tfrec_attn.serving.rest import RestOptions

    max_body = RestOptions().max_body_bytes
    rng = random.Random(args.seed)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "requests_per_protocol": args.requests, "seed": args.seed}
    with tempfile.TemporaryDirectory() as tmp:
        ids = [str(i) for i in range(2000)]
        path = build_export(tmp, ids, k=10, overrides=["model.embedding_dim=16", "model.num_blocks=1",
                                                       "model.max_len=50"])
        good = np.array([["1", "2", "3", ""]], dtype=object)
        expected = tf.saved_model.load(path).signatures["serving_default"](history=tf.constant(good))
        server = ServerProcess(tmp + "/retrieval", rest=True, stderr=os.path.join(tmp, "server.log"))
        report["rss_after_start_mb"] = round(memory_mb(server.proc.pid)["rss_mb"])
        ok = True
        for protocol in ("grpc", "rest"):
            if args.protocol not in (protocol, "both") or "died" in report:
                continue
            reset_peak_rss(server.proc.pid)
            fuzz = fuzz_grpc if protocol == "grpc" else fuzz_rest
            ok &= fuzz(args, server, rng, report, *(() if protocol == "grpc" else (max_body,)))
            if "died" not in report:
                report[f"over_limit_{protocol}"] = over_limit_request(server, protocol)
        correct = False
        if server.alive():
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.target))
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "retrieval"
            request.inputs["history"].CopyFrom(tf.make_tensor_proto(good))
            answer = stub.Predict(request, 30.0)
            correct = bool((tf.make_ndarray(answer.outputs["item_ids"]) == expected["item_ids"].numpy()).all())
            conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
            conn.request("POST", "/v1/models/retrieval:predict", json.dumps({"instances": good.tolist()}))
            rest_ids = json.loads(conn.getresponse().read())["predictions"][0]["item_ids"]
            correct &= rest_ids == expected["item_ids"].numpy()[0].astype(str).tolist()
        alive = server.alive()
        server.stop()
        with open(os.path.join(tmp, "server.log")) as handle:
            log = handle.read()
        report["server_tracebacks"] = log.count("Traceback")
    report.update(alive=alive, good_request_correct=correct)
    ok = ok and alive and correct and not report["server_tracebacks"]
    report["result"] = "PASS" if ok else "FAIL"
    print(json.dumps(report, indent=2, default=str))
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(json.dumps(report, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
