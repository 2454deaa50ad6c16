#!/usr/bin/env python
"""Serving benchmarks (loopback only); figures go to docs/benchmarks.md.

    python tools/bench_serving.py latency      # gRPC Predict vs in-process, batch 1
    python tools/bench_serving.py throughput   # 8 concurrent clients, with/without batching
    python tools/bench_serving.py swap         # hot version swap under load: failed requests
    python tools/bench_serving.py scann        # ScaNN vs brute force on a 10^6-item catalogue
    python tools/bench_serving.py path         # our request path in-process, step by step
    python tools/bench_serving.py overlimit    # one 100,000-row request (gRPC, REST): answer, time, peak RSS

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
from serving_fixtures import (  # noqa: E402
    ServerProcess,
    build_export,
    memory_mb,
    movielens_ids,
    reset_peak_rss,
    wait_for,
)


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
    from grpc_health.v1 import health_pb2, health_pb2_grpc
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
    server = ServerProcess(os.path.join(base, "retrieval"), *args.server_flag)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.target))
    requests = [make_request(h) for h in rows]
    for r in requests[:50]:
        stub.Predict(r, 10.0)
    remote = []
    for r in requests:
        t = time.perf_counter()
        stub.Predict(r, 10.0)
        remote.append(time.perf_counter() - t)
    # The transport's floor: a grpc.health Check (no model, tiny messages) to the same server.
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.target))
    check = health_pb2.HealthCheckRequest()
    floor = []
    for _ in range(len(requests)):
        t = time.perf_counter()
        health.Check(check, 10.0)
        floor.append(time.perf_counter() - t)
    server.stop()
    result = {"in_process": percentiles(local), "grpc": percentiles(remote),
              "grpc_health_check_floor": percentiles(floor)}
    result["p99_ratio"] = result["grpc"]["p99_ms"] / result["in_process"]["p99_ms"]
    result["p50_ratio"] = result["grpc"]["p50_ms"] / result["in_process"]["p50_ms"]
    return result


def request_path(args, ids, base):
    """Times the server's own request handling without gRPC: parse, run, respond."""
    import tensorflow as tf

    from tfrec_attn.serving.servable import LoadedVersion
    from tfrec_attn.serving.server import predict

    version = LoadedVersion("retrieval", 1, build_export(base, ids, k=10))
    rows = history_rows(ids, args.requests)
    requests = [make_request(h) for h in rows]
    fn = version.functions["serving_default"]
    arrays = [version.parse_inputs("serving_default", r.inputs) for r in requests]
    outputs = [version.run("serving_default", a) for a in arrays[:50]]

    def timed(call, items):
        for item in items[:50]:
            call(item)
        samples = []
        for item in items:
            t = time.perf_counter()
            call(item)
            samples.append(time.perf_counter() - t)
        return percentiles(samples)

    return {
        "bare signature call": timed(lambda h: fn(history=tf.constant(h))["item_ids"].numpy(), rows),
        "predict() (parse + run + response)": timed(lambda r: predict(version, r), requests),
        "parse request": timed(lambda r: version.parse_inputs("serving_default", r.inputs), requests),
        "run signature": timed(lambda a: version.run("serving_default", a), arrays),
        "build response tensors": timed(lambda o: [tf.make_tensor_proto(v) for v in o.values()],
                                        outputs * (len(rows) // len(outputs))),
    }


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(target, ids, clients, seconds, during=None, server_pid=None):
    """``clients`` client processes hammering ``target`` for ``seconds``; ``during()`` runs meanwhile.

    With ``server_pid``, also reports the server's CPU milliseconds per answered request.
    """
    ctx = mp.get_context("spawn")
    queue, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_client_worker, args=(target, history_rows(ids, 64, seed=c), seconds, ready, go, queue))
             for c in range(clients)]
    for p in procs:
        p.start()
    for _ in procs:  # every client has imported TF and made one call
        ready.get()
    cpu_start = cpu_seconds(server_pid) if server_pid else None
    go.set()
    side = None
    if during:
        time.sleep(1.0)
        side = during()
    results = [queue.get() for _ in procs]
    server_cpu = cpu_seconds(server_pid) - cpu_start if server_pid else None
    for p in procs:
        p.join()
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    errors = {}
    for r in results:
        for k, v in r[2].items():
            errors[k] = errors.get(k, 0) + v
    lat = [x for r in results for x in r[3]]
    out = {"clients": clients, "seconds": seconds, "ok": ok, "failed": failed, "errors": errors,
           "requests_per_second": ok / seconds, "latency": percentiles(lat), "side": side}
    if server_pid:
        out["server_cpu_ms_per_request"] = 1000.0 * server_cpu / max(ok, 1)
    return out


def throughput(args, ids, base):
    build_export(base, ids, k=10)
    batching_file = os.path.join(base, "batching.txt")
    with open(batching_file, "w") as handle:
        handle.write(f"max_batch_size {{ value: {args.max_batch} }}\nbatch_timeout_micros {{ value: {args.timeout_us} }}\n"
                     f"num_batch_threads {{ value: {args.batch_threads} }}\nmax_enqueued_batches {{ value: 1000 }}\n"
                     "pad_variable_length_inputs: true\n")
    out = {"server_flags": args.server_flag}
    for name, extra in (("no batching", []),
                        ("batching", ["--enable_batching", "--batching_parameters_file", batching_file])):
        if args.only and name != args.only:
            continue
        server = ServerProcess(os.path.join(base, "retrieval"), *extra, *args.server_flag)
        out[name] = load(server.target, ids, args.clients, args.seconds, server_pid=server.proc.pid)
        server.stop()
        print(name, json.dumps({k: v for k, v in out[name].items() if k != "latency"}), flush=True)
    return out


def swap(args, ids, base):
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    build_export(base, ids, k=10)
    server = ServerProcess(os.path.join(base, "retrieval"), "--file_system_poll_wait_seconds", "0.5", *args.server_flag,
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


def overlimit(args, ids, base):
    """One request of ``--rows`` rows of a ``--history-length``-item history, over gRPC then
    REST, each to a fresh server: the answer, how long it took, and the server's peak RSS."""
    import http.client

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    build_export(base, ids, k=10)
    width = args.history_length
    history = np.array(history_rows(ids, 1, length=width)[0].tolist() * args.rows, dtype=object).reshape(
        args.rows, width)
    out = {"rows": args.rows, "history_length": width}
    for protocol in ("grpc", "rest"):
        server = ServerProcess(os.path.join(base, "retrieval"), *args.server_flag, rest=True)
        time.sleep(2.0)
        reset_peak_rss(server.proc.pid)
        before = memory_mb(server.proc.pid)["rss_mb"]
        start = time.time()
        if protocol == "grpc":
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(
                server.target, options=[("grpc.max_send_message_length", 256 << 20),
                                        ("grpc.max_receive_message_length", 256 << 20)]))
            request = make_request(history)
            size = request.ByteSize()
            try:
                response = stub.Predict(request, 600.0)
                answer = f"OK, {tf.make_ndarray(response.outputs['item_ids']).shape[0]} rows"
            except grpc.RpcError as error:
                answer = f"{error.code().name}: {error.details()[:160]}"
        else:
            body = json.dumps({"instances": history.tolist()}).encode()
            size = len(body)
            conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=600)
            try:
                conn.request("POST", "/v1/models/retrieval:predict", body)
                response = conn.getresponse()
                answer = f"{response.status}: {response.read()[:160].decode(errors='replace')}"
            except (OSError, http.client.HTTPException) as error:
                answer = f"no answer: {type(error).__name__}: {error}"
        seconds = time.time() - start
        peak = memory_mb(server.proc.pid)["peak_rss_mb"] if server.alive() else None
        server.stop()
        out[protocol] = {"request_bytes": size, "answer": answer, "seconds": seconds, "rss_before_mb": before,
                         "peak_rss_mb": peak}
        print(protocol, json.dumps(out[protocol]), flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("latency", "throughput", "swap", "scann", "path", "overlimit"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--timeout-us", type=int, default=0)
    parser.add_argument("--batch-threads", type=int, default=2)
    parser.add_argument("--batching", action="store_true", help="swap mode: with server-side batching")
    parser.add_argument("--catalogue", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=100_000, help="overlimit: rows in the request")
    parser.add_argument("--history-length", type=int, default=50, help="overlimit: items per row")
    parser.add_argument("--intra-op", type=int, default=0,
                        help="TensorFlow intra-op threads for the server and the in-process baseline (0 = TF default)")
    parser.add_argument("--inter-op", type=int, default=0, help="same, inter-op threads")
    parser.add_argument("--server-flag", action="append", default=[],
                        help="extra `tfrec-attn serve` flag, e.g. --server-flag=--tensorflow_intra_op_parallelism=1")
    parser.add_argument("--only", choices=("no batching", "batching"), help="throughput: one server setting")
    parser.add_argument("--out", default="bench_serving.jsonl")
    args = parser.parse_args(argv)
    if args.intra_op or args.inter_op:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
        args.server_flag += [f"--tensorflow_intra_op_parallelism={args.intra_op}",
                             f"--tensorflow_inter_op_parallelism={args.inter_op}"]
    ids = movielens_ids() if args.mode != "scann" else None
    with tempfile.TemporaryDirectory() as base:
        result = {"latency": latency, "throughput": throughput, "swap": swap, "scann": scann,
                  "path": request_path, "overlimit": overlimit}[args.mode](args, ids, base)
    result = {"mode": args.mode, "intra_op": args.intra_op, "inter_op": args.inter_op, "date": time.strftime("%Y-%m-%d %H:%M"), "machine":
              f"{platform.machine()}, {os.cpu_count()} cores", **result}
    print(json.dumps(result, indent=2, default=str))
    with open(args.out, "a") as handle:
        handle.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
