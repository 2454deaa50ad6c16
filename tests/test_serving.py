import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tfrec_attn.export import export_retrieval
from tfrec_attn.serving.client import RecommenderClient, ServingError
from tfrec_attn.serving.config import (
    BatchingOptions,
    ServingConfigError,
    parse_batching_parameters,
    parse_model_server_config,
    single_model_config,
)
from tfrec_attn.serving.server import ModelServer

HISTORY = np.array([["i1", "i2", "i3", ""], ["i30", "", "", ""]], dtype=object)


def start(base_path, **kwargs):
    return ModelServer(single_model_config("retrieval", base_path), port=0, host="127.0.0.1",
                       **kwargs).start()


def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return (channel, prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def request_for(history, signature="", name="retrieval", **extra):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(history))
    for key, value in extra.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


@pytest.fixture(scope="module")
def server(tiny_export):
    server = start(tiny_export[0], poll_wait_seconds=0)
    yield server
    server.stop()


def test_round_trip_equals_in_process_signature(server, tiny_export):
    channel, predict, _ = stubs(server)
    response = predict.Predict(request_for(HISTORY), 10.0)
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    local = tf.saved_model.load(tiny_export[1]).signatures["serving_default"](history=tf.constant(HISTORY))
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["item_ids"]), local["item_ids"].numpy())
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["scores"]), local["scores"].numpy(), rtol=1e-6)
    # output_filter returns only what was asked for.
    filtered = request_for(HISTORY)
    filtered.output_filter.append("scores")
    assert list(predict.Predict(filtered, 10.0).outputs) == ["scores"]
    channel.close()


def test_metadata_status_and_health(server):
    channel, predict, models = stubs(server)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "retrieval"
    response = predict.GetModelMetadata(request, 10.0)
    defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(defs)
    default = defs.signature_def["serving_default"]
    assert set(default.inputs) == {"history"} and set(default.outputs) == {"item_ids", "scores"}
    assert default.inputs["history"].dtype == tf.string.as_datatype_enum
    assert {"rank", "explain", "user_embedding"} <= set(defs.signature_def)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "retrieval"
    versions = models.GetModelStatus(status, 10.0).model_version_status
    assert [(v.version, v.state) for v in versions] == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def bad_requests():
    good = request_for(HISTORY)
    cases = []
    r = predict_pb2.PredictRequest()
    r.model_spec.name = "retrieval"
    cases.append(("missing input", r, grpc.StatusCode.INVALID_ARGUMENT, "inputs['history']: missing"))
    r = request_for(np.array([[1, 2]], dtype=np.int64))
    cases.append(("wrong dtype", r, grpc.StatusCode.INVALID_ARGUMENT, "inputs['history']: dtype int64"))
    r = request_for(np.array(["i1", "i2"], dtype=object))
    cases.append(("wrong rank", r, grpc.StatusCode.INVALID_ARGUMENT, "inputs['history']: rank 1"))
    r = predict_pb2.PredictRequest()
    r.CopyFrom(good)
    r.inputs["extra"].CopyFrom(tf.make_tensor_proto(np.array([1.0])))
    cases.append(("unknown input", r, grpc.StatusCode.INVALID_ARGUMENT, "inputs['extra']: not an input"))
    r = predict_pb2.PredictRequest()
    r.CopyFrom(good)
    r.model_spec.signature_name = "nope"
    cases.append(("unknown signature", r, grpc.StatusCode.INVALID_ARGUMENT,
                  "model_spec.signature_name: 'nope'"))
    r = predict_pb2.PredictRequest()
    r.CopyFrom(good)
    r.output_filter.append("nope")
    cases.append(("unknown output", r, grpc.StatusCode.INVALID_ARGUMENT, "output_filter: 'nope'"))
    r = predict_pb2.PredictRequest()
    r.CopyFrom(good)
    r.inputs["history"].tensor_shape.dim[0].size = 3  # shape says 3 rows, values for 2
    cases.append(("size mismatch", r, grpc.StatusCode.INVALID_ARGUMENT, "needs 12 values, the request has 8"))
    r = predict_pb2.PredictRequest()
    r.CopyFrom(good)
    r.inputs["history"].tensor_shape.dim[0].size = 1 << 30
    cases.append(("huge shape", r, grpc.StatusCode.INVALID_ARGUMENT, "max_batch_rows=1024"))
    r = request_for(HISTORY, name="other")
    cases.append(("unknown model", r, grpc.StatusCode.NOT_FOUND, "model 'other' is not served"))
    r = predict_pb2.PredictRequest()
    r.CopyFrom(good)
    r.model_spec.version.value = 7
    cases.append(("unknown version", r, grpc.StatusCode.NOT_FOUND, "version 7 of model 'retrieval'"))
    r = predict_pb2.PredictRequest()
    r.CopyFrom(good)
    r.model_spec.version_label = "stable"
    cases.append(("unknown label", r, grpc.StatusCode.NOT_FOUND, "'stable' is not a label"))
    return cases


@pytest.mark.parametrize("name, request_, code, message", bad_requests(), ids=[c[0] for c in bad_requests()])
def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(server, name, request_, code, message):
    channel, predict, _ = stubs(server)
    with pytest.raises(grpc.RpcError) as info:
        predict.Predict(request_, 10.0)
    assert info.value.code() == code
    assert message in info.value.details()
    ok = predict.Predict(request_for(HISTORY), 10.0)
    assert tf.make_ndarray(ok.outputs["item_ids"]).shape == (2, 10)
    channel.close()


def test_non_utf8_unknown_and_empty_inputs_are_not_errors(server):
    channel, predict, _ = stubs(server)
    weird = np.array([[b"\xff\xfe", b"i1", b""]], dtype=object)
    out = tf.make_ndarray(predict.Predict(request_for(weird), 10.0).outputs["item_ids"])
    assert b"i1" not in out[0] and out.shape == (1, 10)
    empty = np.zeros((0, 3), dtype=object)
    assert tf.make_ndarray(predict.Predict(request_for(empty), 10.0).outputs["item_ids"]).shape == (0, 10)
    channel.close()


def test_classify_regress_unimplemented(server):
    channel, predict, _ = stubs(server)
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "retrieval"
    with pytest.raises(grpc.RpcError) as info:
        predict.Regress(request, 10.0)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    channel.close()


def test_warmup_file_is_prediction_logs_the_server_answers(server, tiny_export):
    path = os.path.join(tiny_export[1], "assets.extra", "tf_serving_warmup_requests")
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert 1 <= len(records) <= 1000
    channel, predict, _ = stubs(server)
    signatures = set()
    for log in records:
        response = predict.Predict(log.predict_log.request, 10.0)
        signatures.add(response.model_spec.signature_name)
        assert response.outputs
    assert {"serving_default", "rank"} <= signatures  # and whatever else the export warms up
    channel.close()


def test_new_version_is_picked_up_and_a_corrupt_one_refused(tiny_model, tiny_export, tmp_path):
    model, vocabulary = tiny_model
    base = tmp_path / "retrieval"
    shutil.copytree(tiny_export[1], base / "1")  # version 1: the tiny model at k=10
    server = start(str(base), poll_wait_seconds=0.2)
    try:
        client = RecommenderClient(f"127.0.0.1:{server.port}")
        assert client.status() == {1: "AVAILABLE"}
        export_retrieval(model, vocabulary, str(tmp_path), k=5)  # version 2: k=5
        deadline = time.time() + 30
        while client.status().get(2) != "AVAILABLE" and time.time() < deadline:
            time.sleep(0.1)
        assert len(client.recommend(["i1"])) == 5  # served by version 2
        deadline = time.time() + 30
        while client.status().get(1) != "END" and time.time() < deadline:
            time.sleep(0.1)
        assert client.status()[1] == "END"  # old version unloaded
        # A corrupt version 3: a SavedModel whose variables are garbage.
        shutil.copytree(base / "2", tmp_path / "staging")
        for name in os.listdir(tmp_path / "staging" / "variables"):
            (tmp_path / "staging" / "variables" / name).write_bytes(b"not a checkpoint")
        os.rename(tmp_path / "staging", base / "3")
        deadline = time.time() + 30
        while client.status().get(3) != "END" and time.time() < deadline:
            time.sleep(0.1)
        status = client.status()
        assert status[3] == "END" and status[2] == "AVAILABLE"
        assert len(client.recommend(["i1"])) == 5  # version 2 still answers
        client.close()
    finally:
        server.stop()


def test_server_side_batching_merges_concurrent_requests(tiny_export):
    options = BatchingOptions(max_batch_size=16, batch_timeout_micros=20000, num_batch_threads=1,
                              pad_variable_length_inputs=True)
    server = start(tiny_export[0], poll_wait_seconds=0, batching=options)
    try:
        local = tf.saved_model.load(tiny_export[1]).signatures["serving_default"]
        histories = [[f"i{(j + t) % 40}" for t in range(1 + j % 5)] for j in range(24)]
        results = [None] * len(histories)

        def call(j):
            with RecommenderClient(f"127.0.0.1:{server.port}") as client:
                results[j] = client.recommend(histories[j])

        threads = [threading.Thread(target=call, args=(j,)) for j in range(len(histories))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for j, history in enumerate(histories):
            expected = local(history=tf.constant([history]))["item_ids"].numpy()[0].astype(str).tolist()
            assert [item for item, _ in results[j]] == expected
        assert server.batcher.rows_run == len(histories)
        assert server.batcher.batches_run < len(histories)  # some requests shared a batch
    finally:
        server.stop()


class FlakyServer:
    """A loopback PredictionService / ModelService whose first ``failures`` calls of each
    method end with ``code``, then answer; it records when each call arrived."""

    def __init__(self, failures: int, code=grpc.StatusCode.UNAVAILABLE):
        from concurrent import futures

        self.calls: dict[str, list[float]] = {"Predict": [], "GetModelStatus": []}
        outer = self

        def answer(method, context, response):
            outer.calls[method].append(time.perf_counter())
            if len(outer.calls[method]) <= failures:
                context.abort(code, f"{method}: attempt {len(outer.calls[method])} refused")
            return response

        class Predictions(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):
                response = predict_pb2.PredictResponse()
                response.outputs["echo"].CopyFrom(request.inputs["history"])
                return answer("Predict", context, response)

        class Models(model_service_pb2_grpc.ModelServiceServicer):
            def GetModelStatus(self, request, context):
                response = get_model_status_pb2.GetModelStatusResponse()
                response.model_version_status.add(version=7, state=30)
                return answer("GetModelStatus", context, response)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Predictions(), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(Models(), self.server)
        self.target = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def gaps(self, method: str) -> list[float]:
        times = self.calls[method]
        return [b - a for a, b in zip(times, times[1:])]

    def stop(self):
        self.server.stop(None)


def test_client_retries_unavailable_through_grpc_retry_policy():
    """A server that answers UNAVAILABLE twice, then OK: the channel's retry policy makes the
    third attempt, after backoffs of ~0.1 s then ~0.2 s (gRPC's jitter: x0.8-1.2)."""
    flaky = FlakyServer(failures=2)
    try:
        with RecommenderClient(flaky.target, retries=2, backoff=0.1, timeout=10) as client:
            out = client.predict({"history": HISTORY})
            assert out["echo"].tolist() == HISTORY.astype(bytes).tolist()
            assert client.status() == {7: "AVAILABLE"}  # ModelService calls are retried too
        for method in ("Predict", "GetModelStatus"):
            assert len(flaky.calls[method]) == 3
            first, second = flaky.gaps(method)
            assert 0.08 <= first and 0.16 <= second, (method, first, second)
    finally:
        flaky.stop()
    flaky = FlakyServer(failures=1)
    try:  # a 2 MB request is retried too (gRPC buffers only 256 KiB per call for retries by default)
        big = np.arange(1 << 19, dtype=np.float32).reshape(1, -1)
        with RecommenderClient(flaky.target, retries=1, backoff=0.01) as client:
            np.testing.assert_array_equal(client.predict({"history": big})["echo"], big)
        assert len(flaky.calls["Predict"]) == 2
    finally:
        flaky.stop()


def test_client_gives_up_after_its_retries_and_never_retries_other_codes():
    flaky = FlakyServer(failures=10)
    try:
        with RecommenderClient(flaky.target, retries=3, backoff=0.01) as client, \
                pytest.raises(ServingError) as info:
            client.predict({"history": HISTORY})
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert str(info.value) == "UNAVAILABLE: Predict: attempt 4 refused"  # the last attempt's answer
        assert len(flaky.calls["Predict"]) == 4
        with RecommenderClient(flaky.target, retries=0) as client, pytest.raises(ServingError):
            client.status()
        assert len(flaky.calls["GetModelStatus"]) == 1  # retries=0: no retry policy
    finally:
        flaky.stop()
    flaky = FlakyServer(failures=10, code=grpc.StatusCode.NOT_FOUND)
    try:
        with RecommenderClient(flaky.target, retries=4, backoff=5) as client, pytest.raises(ServingError) as info:
            client.predict({"history": HISTORY})
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert len(flaky.calls["Predict"]) == 1  # NOT_FOUND is not retried
    finally:
        flaky.stop()


def test_client_to_a_server_that_never_comes_up_ends_in_one_serving_error(server):
    start_time = time.perf_counter()
    client = RecommenderClient("127.0.0.1:9", retries=2, backoff=0.05, timeout=5)
    with pytest.raises(ServingError) as info:
        client.recommend(["i1"])
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "\n" not in str(info.value) and str(info.value).startswith("UNAVAILABLE: ")
    elapsed = time.perf_counter() - start_time
    assert 0.8 * (0.05 + 0.1) <= elapsed < 5  # two backoffs, then the error (not the deadline)
    client = RecommenderClient(f"127.0.0.1:{server.port}", model_name="nope", retries=4, backoff=5)
    start_time = time.perf_counter()
    with pytest.raises(ServingError) as info:
        client.recommend(["i1"])
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert time.perf_counter() - start_time < 4  # NOT_FOUND is not retried


@pytest.mark.parametrize("kwargs, message", [
    ({"retries": 5}, r"retries=5 must be an integer in \[0, 4\]"),
    ({"retries": -1}, r"retries=-1 must be"),
    ({"backoff": 0}, r"backoff=0 must be >= 0.001 seconds"),
])
def test_client_rejects_retry_settings_grpc_cannot_apply(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecommenderClient("127.0.0.1:9", **kwargs)


def test_config_parsing():
    config = parse_model_server_config("""
        model_config_list {
          config { name: "retrieval" base_path: "/models/retrieval" model_platform: "tensorflow"
                   model_version_policy { latest { num_versions: 2 } } }
          config { name: "ranking" base_path: "/models/ranking" model_platform: "tensorflow" }
        }""")
    assert [m.name for m in config.model_config_list.config] == ["retrieval", "ranking"]
    with pytest.raises(ServingConfigError, match="duplicate model names"):
        parse_model_server_config('model_config_list { config { name: "a" base_path: "/x" } '
                                  'config { name: "a" base_path: "/y" } }')
    with pytest.raises(ServingConfigError, match=r"<model config>:1"):
        parse_model_server_config("model_config_list { config { nme: 'a' } }")
    options = parse_batching_parameters("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\n"
                                        "num_batch_threads { value: 2 }\npad_variable_length_inputs: true\n")
    assert (options.max_batch_size, options.batch_timeout_micros, options.num_batch_threads,
            options.pad_variable_length_inputs) == (32, 1000, 2, True)
    with pytest.raises(ServingConfigError):
        parse_batching_parameters("max_batch_size: 32")  # must be a wrapper message
    assert text_format.MessageToString(single_model_config("m", "/b")).count("base_path") == 1


def test_rest_api_predict_status_metadata(tiny_export):
    import json
    import urllib.error
    import urllib.request

    server = ModelServer(single_model_config("retrieval", tiny_export[0]), port=0, host="127.0.0.1",
                         poll_wait_seconds=0, rest_port=0).start()
    base = f"http://127.0.0.1:{server.rest.port}/v1/models/retrieval"
    try:
        def post(url, body):
            req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as response:
                return json.loads(response.read())

        local = tf.saved_model.load(tiny_export[1]).signatures["serving_default"](history=tf.constant(HISTORY))
        rows = post(base + ":predict", {"instances": [["i1", "i2", "i3"], ["i30"]]})["predictions"]
        assert [r["item_ids"] for r in rows] == local["item_ids"].numpy().astype(str).tolist()
        cols = post(base + "/versions/1:predict", {"signature_name": "rank",
                                                   "inputs": {"history": [["i1"]], "candidates": [["i2", "i3"]]}})
        assert len(cols["outputs"][0]) == 2  # a lone output ("scores"): TF Serving drops its name
        with urllib.request.urlopen(base, timeout=10) as response:
            assert json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"
        with urllib.request.urlopen(base + "/metadata", timeout=10) as response:
            assert "serving_default" in json.loads(response.read())["metadata"]["signature_def"]["signature_def"]
        with pytest.raises(urllib.error.HTTPError) as info:
            post(base + ":predict", {"instances": [[1, 2]]})
        assert info.value.code == 400 and "expected strings" in json.loads(info.value.read())["error"]
        with pytest.raises(urllib.error.HTTPError) as info:
            post(f"http://127.0.0.1:{server.rest.port}/v1/models/nope:predict", {"instances": [["a"]]})
        assert info.value.code == 404
    finally:
        server.stop()


def test_serve_and_query_commands(tiny_export):
    import re
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "tfrec_attn.app.cli", "serve", "--port", "0", "--host", "127.0.0.1",
                             "--model_name", "retrieval", "--model_base_path", tiny_export[0],
                             "--tensorflow_intra_op_parallelism", "1", "--tensorflow_inter_op_parallelism", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"listening on 127.0.0.1:(\d+)", line).group(1))
        assert "TF threads: intra-op 1, inter-op 2" in line
        query = subprocess.run([sys.executable, "-m", "tfrec_attn.app.cli", "query", "--server", f"127.0.0.1:{port}",
                                "--history", "i1,i2,i3", "-k", "3"], capture_output=True, text=True, timeout=120)
        assert query.returncode == 0, query.stderr
        ranked = [line.split()[1] for line in query.stdout.splitlines()]
        assert len(ranked) == 3 and not {"i1", "i2", "i3"} & set(ranked)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_model_config_file_serves_several_models_with_labels(tiny_model, tiny_export, tmp_path):
    model, vocabulary = tiny_model
    shutil.copytree(tiny_export[1], tmp_path / "retrieval" / "1")  # the tiny model at k=10
    export_retrieval(model, vocabulary, str(tmp_path), model_name="small", k=3)
    export_retrieval(model, vocabulary, str(tmp_path), model_name="small", k=4)
    config = parse_model_server_config(f"""
        model_config_list {{
          config {{ name: "retrieval" base_path: "{tmp_path}/retrieval" model_platform: "tensorflow" }}
          config {{ name: "small" base_path: "{tmp_path}/small" model_platform: "tensorflow"
                   model_version_policy {{ all {{}} }}
                   version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }}
        }}""")
    server = ModelServer(config, port=0, host="127.0.0.1", poll_wait_seconds=0).start()
    try:
        target = f"127.0.0.1:{server.port}"
        assert len(RecommenderClient(target, "retrieval").recommend(["i1"])) == 10
        assert len(RecommenderClient(target, "small").recommend(["i1"])) == 4  # latest of "all"
        assert len(RecommenderClient(target, "small", version=1).recommend(["i1"])) == 3
        assert RecommenderClient(target, "small").status() == {1: "AVAILABLE", 2: "AVAILABLE"}
        channel, predict, _ = stubs(server)
        for label, k in (("stable", 3), ("canary", 4)):
            request = request_for(HISTORY, name="small")
            request.model_spec.version_label = label
            response = predict.Predict(request, 10.0)
            assert tf.make_ndarray(response.outputs["item_ids"]).shape == (2, k)
        channel.close()
    finally:
        server.stop()
