#!/usr/bin/env python
"""Serving benchmarks (loopback only); figures go to docs/benchmarks.md.

    python tools/bench_serving.py latency      # gRPC Predict vs in-process, batch 1
    python tools/bench_serving.py throughput   # 8 concurrent clients, with/without batching
    python tools/bench_serving.py swap         # hot version swap under load: failed requests
    python tools/bench_serving.py scann        # ScaNN vs brute force on a 10^6-item catalogue

The model is the default retrieval architecture over the MovieLens 100K catalogue
(untrained weights: cost does not depend on their values), history of 50 items, top-10.
The server is ``tfrec-attn serve`` in its own process, as TF Serving would be.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from serving_fixtures import ServerProcess, build_export, movielens_ids, wait_for  # noqa: E402


def percentiles(samples):
    a = np.asarray(samples) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "n": len(a)}


def history_rows(ids, n, length=50, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.choice(ids, size=length, replace=False).astype(object).reshape(1, length) for _ in range(n)]


def make_request(history, model="retrieval"):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(history))
    return request


def latency(args, ids, base):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    path = build_export(base, ids, k=10)
    rows = history_rows(ids, args.requests)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    for h in rows[:50]:
        fn(history=tf.constant(h))
    local = []
    for h in rows:
        t = time.perf_counter()
        fn(history=tf.constant(h))["item_ids"].numpy()
        local.append(time.perf_counter() - t)
    server = ServerProcess(os.path.join(base, "retrieval"))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.target))
    requests = [make_request(h) for h in rows]
    for r in requests[:50]:
        stub.Predict(r, 10.0)
    remote = []
    for r in requests:
        t = time.perf_counter()
        stub.Predict(r, 10.0)
        remote.append(time.perf_counter() - t)
    server.stop()
    result = {"in_process": percentiles(local), "grpc": percentiles(remote)}
    result["p99_ratio"] = result["grpc"]["p99_ms"] / result["in_process"]["p99_ms"]
    result["p50_ratio"] = result["grpc"]["p50_ms"] / result["in_process"]["p50_ms"]
    return result


def _client_worker(target, rows, seconds, ready, go, queue):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    requests = [make_request(h) for h in rows]
    stub.Predict(requests[0], 30.0)  # connected and warm before the clock starts
    ready.put(1)
    go.wait()
    ok = failed = 0
    errors = {}
    end = time.time() + seconds
    i = 0
    latencies = []
    while time.time() < end:
        t = time.perf_counter()
        try:
            stub.Predict(requests[i % len(requests)], 30.0)
            ok += 1
        except grpc.RpcError as error:
            failed += 1
            errors[error.code().name] = errors.get(error.code().name, 0) + 1
        latencies.append(time.perf_counter() - t)
        i += 1
    queue.put((ok, failed, errors, latencies))


def load(target, ids, clients, seconds, during=None):
    """``clients`` client processes hammering ``target`` for ``seconds``; ``during()`` runs meanwhile."""
    ctx = mp.get_context("spawn")
    queue, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_client_worker, args=(target, history_rows(ids, 64, seed=c), seconds, ready, go, queue))
             for c in range(clients)]
    for p in procs:
        p.start()
    for _ in procs:  # every client has imported TF and made one call
        ready.get()
    go.set()
    side = None
    if during:
        time.sleep(1.0)
        side = during()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    errors = {}
    for r in results:
        for k, v in r[2].items():
            errors[k] = errors.get(k, 0) + v
    lat = [x for r in results for x in r[3]]
    return {"clients": clients, "seconds": seconds, "ok": ok, "failed": failed, "errors": errors,
            "requests_per_second": ok / seconds, "latency": percentiles(lat), "side": side}


def throughput(args, ids, base):
    build_export(base, ids, k=10)
    batching_file = os.path.join(base, "batching.txt")
    with open(batching_file, "w") as handle:
        handle.write(f"max_batch_size {{ value: {args.max_batch} }}\nbatch_timeout_micros {{ value: {args.timeout_us} }}\n"
                     f"num_batch_threads {{ value: {args.batch_threads} }}\nmax_enqueued_batches {{ value: 1000 }}\n"
                     "pad_variable_length_inputs: true\n")
    out = {}
    for name, extra in (("no batching", []),
                        ("batching", ["--enable_batching", "--batching_parameters_file", batching_file])):
        server = ServerProcess(os.path.join(base, "retrieval"), *extra)
        out[name] = load(server.target, ids, args.clients, args.seconds)
        server.stop()
        print(name, json.dumps({k: v for k, v in out[name].items() if k != "latency"}), flush=True)
    return out


def swap(args, ids, base):
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    build_export(base, ids, k=10)
    server = ServerProcess(os.path.join(base, "retrieval"), "--file_system_poll_wait_seconds", "0.5",
                           *(["--enable_batching"] if args.batching else []))
    models = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.target))

    def states():
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "retrieval"
        names = get_model_status_pb2.ModelVersionStatus.State
        return {s.version: names.Name(s.state) for s in models.GetModelStatus(request, 10).model_version_status}

    def publish_new_versions():
        log = []
        for version in (2, 3):
            t = time.time()
            build_export(base, ids, k=10)  # atomic publish of version N
            wait_for(lambda v=version: states().get(v) == "AVAILABLE", 120)
            wait_for(lambda v=version: states().get(v - 1) == "END", 120)
            log.append({"version": version, "swap_seconds": time.time() - t, "states": states()})
        return log

    result = load(server.target, ids, args.clients, args.seconds, during=publish_new_versions)
    server.stop()
    return result


def scann(args, ids_unused, base):
    import tensorflow as tf

    n = args.catalogue
    ids = np.array([f"item{i}" for i in range(n)], dtype=object)
    timings = {}
    rows = history_rows(ids, args.requests)
    outputs = {}
    for index, options in (("brute_force", {}), ("scann", {})):
        t = time.time()
        path = build_export(base, ids, k=10, model_name=index, index=index, **options)
        build_seconds = time.time() - t
        if index == "scann":
            import scann  # noqa: F401
        fn = tf.saved_model.load(path).signatures["serving_default"]
        for h in rows[:20]:
            fn(history=tf.constant(h))
        samples, results = [], []
        for h in rows:
            t = time.perf_counter()
            results.append(fn(history=tf.constant(h))["item_ids"].numpy()[0])
            samples.append(time.perf_counter() - t)
        timings[index] = {"export_seconds": build_seconds, **percentiles(samples)}
        outputs[index] = results
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(outputs["brute_force"], outputs["scann"])])
    return {"catalogue": n, "timings": timings, "scann_recall_at_10_vs_brute_force": float(recall)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("latency", "throughput", "swap", "scann"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--timeout-us", type=int, default=2000)
    parser.add_argument("--batch-threads", type=int, default=2)
    parser.add_argument("--batching", action="store_true", help="swap mode: with server-side batching")
    parser.add_argument("--catalogue", type=int, default=1_000_000)
    parser.add_argument("--out", default="bench_serving.jsonl")
    args = parser.parse_args(argv)
    ids = movielens_ids() if args.mode != "scann" else None
    with tempfile.TemporaryDirectory() as base:
        result = {"latency": latency, "throughput": throughput, "swap": swap, "scann": scann}[args.mode](args, ids, base)
    result = {"mode": args.mode, "date": time.strftime("%Y-%m-%d %H:%M"), "machine":
              f"{platform.machine()}, {os.cpu_count()} cores", **result}
    print(json.dumps(result, indent=2, default=str))
    with open(args.out, "a") as handle:
        handle.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
