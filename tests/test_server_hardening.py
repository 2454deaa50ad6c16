"""Issue 16 items 4-6 and issue 17 (serving): restarts with a broken newest version, REST
values and parity with gRPC, per-request bounds, and the op libraries exports need."""

import http.client
import json
import logging
import math
import os
import shutil
import socket
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfrec_attn.serving.config import ServingConfigError, single_model_config
from tfrec_attn.serving.predict import HTTP_STATUS
from tfrec_attn.serving.rest import RestOptions, RestServer
from tfrec_attn.serving.rest_codec import json_to_array, response_to_json
from tfrec_attn.serving.servable import (
    RequestLimits,
    register_op_libraries,
    unregistered_op_message,
)
from tfrec_attn.serving.server import ModelServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from serving_fixtures import ServerProcess, wait_for  # noqa: E402

HISTORY = np.array([["i1", "i2", "i3", ""], ["i30", "", "", ""]], dtype=object)
REST = RestOptions(max_body_bytes=1 << 20, keep_alive_timeout_seconds=1.0)


def tensor(value):
    return tf.make_tensor_proto(np.array(value, dtype=object) if not isinstance(value, np.ndarray) else value)


def grpc_request(inputs, signature="", name="retrieval", version=None, label=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value)
    return request


@pytest.fixture(scope="module")
def server(tiny_export):
    server = ModelServer(single_model_config("retrieval", tiny_export[0]), port=0, host="127.0.0.1",
                         poll_wait_seconds=0, rest_port=0, rest_options=REST).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[
        ("grpc.max_send_message_length", 64 << 20)])
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def call_rest(server, method, path, body=None, headers=None):
    """(status, decoded JSON body, raw body text) over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.rest.port, timeout=30)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, data, headers or {"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read().decode()
        return response.status, json.loads(raw), raw
    finally:
        conn.close()


def status_of(stub, request):
    try:
        stub.Predict(request, 30.0)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details()


# -- item 4: a broken newest version at start-up ------------------------------------------------------
def corrupt(version_dir):
    for name in os.listdir(version_dir / "variables"):
        (version_dir / "variables" / name).write_bytes(b"not a checkpoint")


def test_start_with_a_corrupt_newest_version_serves_the_older_one_and_picks_up_a_repair(
        tiny_export, tmp_path, caplog):
    base = tmp_path / "retrieval"
    shutil.copytree(tiny_export[1], base / "1")
    shutil.copytree(tiny_export[1], base / "2")
    shutil.copytree(base / "2" / "variables", tmp_path / "good_variables")
    corrupt(base / "2")
    caplog.set_level(logging.ERROR, logger="tfrec_attn.serving.manager")
    server = ModelServer(single_model_config("retrieval", str(base)), port=0, host="127.0.0.1",
                         poll_wait_seconds=0.2).start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        answer = predict.Predict(grpc_request({"history": tensor(HISTORY)}), 10.0)
        assert answer.model_spec.version.value == 1  # not an outage: the older version answers

        def statuses():
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "retrieval"
            return {s.version: s for s in models.GetModelStatus(request, 10.0).model_version_status}

        refused = statuses()[2]
        assert refused.state == get_model_status_pb2.ModelVersionStatus.END
        assert refused.status.error_code == grpc.StatusCode.UNKNOWN.value[0]
        assert refused.status.error_message  # the load error, e.g. "DataLossError: ..."
        assert statuses()[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert any("version 2" in r.getMessage() and "failed to load" in r.getMessage() for r in caplog.records)
        # Repaired in place: same directory, same file names, new contents (the directory's
        # own mtime does not change). The poller must retry it, then retire version 1.
        for name in os.listdir(tmp_path / "good_variables"):
            shutil.copyfile(tmp_path / "good_variables" / name, base / "2" / "variables" / name)
        assert wait_for(lambda: statuses()[2].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE, 60)
        assert predict.Predict(grpc_request({"history": tensor(HISTORY)}), 10.0).model_spec.version.value == 2
        assert wait_for(lambda: statuses()[1].state == get_model_status_pb2.ModelVersionStatus.END, 60)
        assert statuses()[2].status.error_message == ""
        channel.close()
    finally:
        server.stop()


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"),
    ("empty", "has no version directories"),
    ("only corrupt", "no version under"),
])
def test_a_model_with_nothing_to_serve_fails_at_start_with_one_line(tiny_export, tmp_path, layout, message):
    from tfrec_attn.errors import TfrecAttnError

    base = tmp_path / "retrieval"
    if layout != "missing":
        base.mkdir()
    if layout == "only corrupt":
        shutil.copytree(tiny_export[1], base / "3")
        corrupt(base / "3")
    server = ModelServer(single_model_config("retrieval", str(base)), port=0, host="127.0.0.1",
                         poll_wait_seconds=0)
    with pytest.raises(ServingConfigError) as info:
        server.start()
    text = str(info.value)
    assert message in text and str(base) in text and "\n" not in text
    if layout == "only corrupt":
        assert "version 3:" in text  # the reason, not just the fact
    assert isinstance(info.value, TfrecAttnError)  # the CLI prints `error: ...` and exits 2
    assert server.port is None and server.rest is None  # nothing was bound


# -- item 5: REST values and parity with gRPC ---------------------------------------------------
def test_minus_infinity_survives_the_rest_round_trip(server, stub):
    inputs = {"history": [["i1", "i2"]], "candidates": [["i3", "no-such-item", "i4"]]}
    code, body, raw = call_rest(server, "POST", "/v1/models/retrieval:predict",
                           {"signature_name": "rank", "inputs": inputs})
    assert code == 200
    assert "-Infinity" in raw and "NaN" not in raw  # TF Serving's JSON conformance literals
    rest_scores = body["outputs"][0]  # a lone output: TF Serving drops its name
    answer = stub.Predict(grpc_request({k: tensor(v) for k, v in inputs.items()}, "rank"), 10.0)
    grpc_scores = tf.make_ndarray(answer.outputs["scores"])[0]
    assert rest_scores[1] == -math.inf and grpc_scores[1] == -np.inf
    np.testing.assert_allclose(rest_scores, grpc_scores, rtol=1e-6)


def test_non_finite_floats_keep_sign_and_kind_both_ways():
    # Responses: what the REST handler writes for a float output.
    response = predict_pb2.PredictResponse()
    response.outputs["scores"].CopyFrom(tf.make_tensor_proto(np.array([[np.nan, np.inf, -np.inf, 1.5]],
                                                                      dtype=np.float32)))
    text = json.dumps(response_to_json(response, row_format=False))
    assert "[[NaN, Infinity, -Infinity, 1.5]]" in text
    back = json.loads(text)["outputs"][0]
    assert math.isnan(back[0]) and back[1] == math.inf and back[2] == -math.inf
    # Requests: the same literals parse into a float input (and a string input refuses them).
    body = json.loads('{"x": [[NaN, Infinity, -Infinity, 2]]}')
    array = json_to_array(body["x"], tf.TensorSpec([None, None], tf.float32), "inputs['x']", RequestLimits())
    assert np.isnan(array[0, 0]) and array[0, 1] == np.inf and array[0, 2] == -np.inf and array[0, 3] == 2
    with pytest.raises(ValueError, match="expected strings"):
        json_to_array(body["x"], tf.TensorSpec([None, None], tf.string), "inputs['x']", RequestLimits())


def parity_cases():
    """(name, gRPC request, REST path, REST body, expected gRPC code, text both messages contain)."""
    h = tensor(HISTORY)
    good_rows = [["i1", "i2", "i3"], ["i30"]]
    c = grpc.StatusCode
    wide = [["i1"] * 10_001]
    return [
        ("good", grpc_request({"history": h}), ":predict", {"instances": good_rows}, c.OK, ""),
        ("empty batch", grpc_request({"history": tensor(np.zeros((0, 3), dtype=object))}), ":predict",
         {"instances": []}, c.OK, ""),
        ("missing input", grpc_request({}), ":predict", {"inputs": {}}, c.INVALID_ARGUMENT, "'history']: missing"),
        ("missing key in an instance", grpc_request({}), ":predict", {"instances": [{"nope": ["i1"]}]},
         c.INVALID_ARGUMENT, "'history']: missing"),
        ("extra input", grpc_request({"history": h, "extra": tf.make_tensor_proto(np.array([1.0]))}), ":predict",
         {"inputs": {"history": good_rows, "extra": [1.0]}}, c.INVALID_ARGUMENT, "'extra']: not an input"),
        ("extra instance key", grpc_request({"history": h, "extra": tf.make_tensor_proto(np.array([1.0]))}),
         ":predict", {"instances": [{"history": ["i1"], "extra": 1.0}]}, c.INVALID_ARGUMENT,
         "'extra']: not an input"),
        ("wrong dtype", grpc_request({"history": tf.make_tensor_proto(np.array([[1, 2]]))}), ":predict",
         {"instances": [[1, 2]]}, c.INVALID_ARGUMENT, "history"),
        ("wrong rank", grpc_request({"history": tensor(["i1", "i2"])}), ":predict",
         {"inputs": {"history": ["i1", "i2"]}}, c.INVALID_ARGUMENT, "history"),
        ("unknown signature", grpc_request({"history": h}, "nope"), ":predict",
         {"signature_name": "nope", "instances": good_rows}, c.INVALID_ARGUMENT, "signature_name: 'nope'"),
        ("batch sizes differ", grpc_request({"history": tensor([["i1"], ["i2"]]), "candidates": tensor([["i3"]])},
                                            "rank"), ":predict",
         {"signature_name": "rank", "inputs": {"history": [["i1"], ["i2"]], "candidates": [["i3"]]}},
         c.INVALID_ARGUMENT, "batch sizes differ"),
        ("rows over the limit", grpc_request({"history": tensor([["i1"]] * 100_000)}), ":predict",
         {"instances": [["i1"]] * 100_000}, c.INVALID_ARGUMENT, "max_batch_rows=1024"),
        ("history over the limit", grpc_request({"history": tensor(wide)}), ":predict", {"instances": wide},
         c.INVALID_ARGUMENT, "max_history_length=10000"),
        ("unknown model", grpc_request({"history": h}, name="other"), "other:predict", {"instances": good_rows},
         c.NOT_FOUND, "model 'other' is not served"),
        ("unknown version", grpc_request({"history": h}, version=7), "retrieval/versions/7:predict",
         {"instances": good_rows}, c.NOT_FOUND, "version 7"),
        ("unknown label", grpc_request({"history": h}, label="stable"), "retrieval/labels/stable:predict",
         {"instances": good_rows}, c.NOT_FOUND, "'stable' is not a label"),
    ]


@pytest.mark.parametrize("name, request_, path, body, code, text", parity_cases(),
                         ids=[c[0] for c in parity_cases()])
def test_grpc_and_rest_answer_a_request_alike(server, stub, name, request_, path, body, code, text):
    grpc_code, grpc_message = status_of(stub, request_)
    url = "/v1/models/" + (path if not path.startswith(":") else "retrieval" + path)
    http_code, answer, _ = call_rest(server, "POST", url, body)
    assert grpc_code == code, grpc_message
    assert http_code == HTTP_STATUS[code], answer
    if code == grpc.StatusCode.OK:
        outputs = stub.Predict(request_, 10.0).outputs
        assert len(answer["predictions"]) == tf.make_ndarray(outputs["item_ids"]).shape[0]
    else:
        assert text in grpc_message and text in answer["error"]
    # Either way, the server keeps serving.
    assert call_rest(server, "POST", "/v1/models/retrieval:predict", {"instances": [["i1"]]})[0] == 200


@pytest.mark.parametrize("method, path, body, code, text", [
    ("POST", "/v1/models/retrieval/versions/99999999999999999999:predict", {"instances": [["i1"]]}, 400,
     "not a valid version number"),
    ("GET", "/v1/models/retrieval/versions/99999999999999999999", None, 400, "not a valid version number"),
    ("POST", "/v1/models/retrieval:predict", {"instances": [[{"b64": "not base64!"}]]}, 400, "invalid base64"),
    ("POST", "/v1/models/retrieval:predict", {"instances": [[{"b64": "aTE="}]]}, 200, ""),  # b"i1"
    ("POST", "/v1/models/retrieval:predict", b'{"instances": [["i1"]', 400, "malformed JSON"),
    ("POST", "/v1/models/retrieval:predict", b"[" * 100_000 + b"]" * 100_000, 400, "malformed JSON"),
    ("POST", "/v1/models/retrieval:predict", b'\xff\xfe{"instances"', 400, "malformed JSON"),
    ("POST", "/v1/models/retrieval:predict", b"[1, 2]", 400, "must be a JSON object"),
    ("POST", "/v1/models/retrieval:predict", b'{"instances": [[NaN]]}', 400, "expected strings"),
    ("POST", "/v1/models/retrieval:predict", b'{"instances": [[1' + b"0" * 5000 + b"]]}", 400, "malformed JSON"),
    ("POST", "/v1/models/retrieval:predict", {"instances": [["i1"]], "inputs": {}}, 400, "exactly one of"),
    ("POST", "/v1/models/retrieval:predict", {"instances": [["i1"]], "output": 1}, 400, "unknown key 'output'"),
    ("POST", "/v1/models/retrieval:predict", {"instances": [[["i1"]]]}, 400, "expected a scalar"),
    ("POST", "/v1/models/retrieval:predict", {"instances": "i1"}, 400, "instances: must be a list"),
    ("POST", "/v1/models/retrieval:predict", b"{}" + b" " * (REST.max_body_bytes + 10), 413, "max_body_bytes"),
    ("POST", "/v1/models/retrieval/metadata", {}, 404, "no such resource"),
    ("GET", "/v1/models/retrieval:predict", None, 404, "no such resource"),
    ("PUT", "/v1/models/retrieval:predict", {}, 405, "not allowed"),
])
def test_rest_only_malformed_requests_get_json_errors(server, method, path, body, code, text):
    status, answer, _ = call_rest(server, method, path, body)
    assert status == code, answer
    assert text in answer.get("error", "")
    assert call_rest(server, "GET", "/v1/models/retrieval")[0] == 200


def test_rest_keep_alive_and_idle_connections_are_bounded(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest.port, timeout=10)
    for body, code in (({"instances": [[1]]}, 400), ({"instances": [["i1"]]}, 200), ({}, 400)):
        conn.request("POST", "/v1/models/retrieval:predict", json.dumps(body).encode())
        response = conn.getresponse()
        assert response.status == code and json.loads(response.read())
    conn.close()
    with socket.create_connection(("127.0.0.1", server.rest.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/models/retrieval HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):  # until the server closes (a timeout here fails the test)
            received += chunk
        # The answer, then the server closed the idle connection after keep_alive_timeout_seconds
        # (1 s here; the socket would time out after 10 s).
        assert received.startswith(b"HTTP/1.1 200") and b'"AVAILABLE"' in received


def test_rest_connections_beyond_the_limit_get_503(server):
    rest = RestServer(server.manager, lambda v, r: None, 0, "127.0.0.1",
                      options=RestOptions(max_connections=2, keep_alive_timeout_seconds=30)).start()
    try:
        held = [socket.create_connection(("127.0.0.1", rest.port), timeout=10) for _ in range(2)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", rest.port), timeout=10) as extra:
            assert extra.recv(65536).startswith(b"HTTP/1.1 503")
        for sock in held:
            sock.close()
        assert wait_for(lambda: http_status(rest.port) == 200, 10)
    finally:
        rest.stop()


def http_status(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/v1/models/retrieval")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


# -- issue 17: the op libraries exports need ------------------------------------------------------
def test_a_missing_op_library_is_named_with_its_fix():
    message = unregistered_op_message("/m/1", "CaseFoldUTF8", {"tensorflow_text": "ModuleNotFoundError: x"})
    assert "'CaseFoldUTF8'" in message and "pip install 'tensorflow-text" in message
    message = unregistered_op_message("/m/1", "Scann>ScannSearchBatched", {"scann": "ImportError: y"})
    assert "pip install 'scann" in message
    assert "another TensorFlow version" in unregistered_op_message("/m/1", "MyOp", {})
    assert register_op_libraries() == {}  # both are installed here: nothing failed to import
    from tensorflow.python.framework import op_def_registry

    for op in ("CaseFoldUTF8", "NormalizeUTF8", "RegexSplitWithOffsets", "WordpieceTokenizeWithOffsets",
               "FastBertNormalize", "FastWordpieceTokenizeWithOffsets", "Scann>ScannSearchBatched"):
        assert op_def_registry.get(op) is not None, op


def test_tfrec_attn_serve_loads_an_export_with_tensorflow_text_ops(tmp_path):
    import tensorflow_text as tf_text

    class Normalize(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="text")])
        def serve(self, text):
            return {"normalized": tf_text.normalize_utf8(tf_text.case_fold_utf8(text), "NFD")}

    module = Normalize()
    tf.saved_model.save(module, str(tmp_path / "text" / "1"), signatures={"serving_default": module.serve})
    text = np.array([["Ünïcode ÀB", "x"]], dtype=object)
    expected = module.serve(tf.constant(text))["normalized"].numpy()
    # A fresh `tfrec-attn serve` process: nothing has imported tensorflow_text there.
    server = ServerProcess(str(tmp_path / "text"), model_name="text")
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.target))
        answer = stub.Predict(grpc_request({"text": tensor(text)}, name="text"), 30.0)
        np.testing.assert_array_equal(tf.make_ndarray(answer.outputs["normalized"]), expected)
    finally:
        assert server.stop() == 0
