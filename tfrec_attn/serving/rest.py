"""TF Serving's REST API (``--rest_api_port``) on top of the same model manager.

    GET  /v1/models/NAME[/versions/N|/labels/L]            -> model version status
    GET  /v1/models/NAME[/versions/N|/labels/L]/metadata   -> signature defs
    POST /v1/models/NAME[/versions/N|/labels/L]:predict
         {"signature_name": "...", "instances": [...]}  (row format)  -> {"predictions": [...]}
         {"signature_name": "...", "inputs": {...}}     (columnar)    -> {"outputs": {...}}

A body is decoded into a ``PredictRequest`` and runs through the gRPC path
(``tfrec_attn.serving.predict``): the same validation, limits and status codes, mapped to
HTTP as TF Serving does (INVALID_ARGUMENT -> 400, NOT_FOUND -> 404, UNAVAILABLE -> 503).
Every error is ``{"error": "..."}`` naming the request field.

JSON follows TF Serving's "JSON conformance": floats may be ``NaN``, ``Infinity`` and
``-Infinity`` in requests and responses (a ``-inf`` score stays ``-Infinity``). Strings are
UTF-8 text or ``{"b64": "..."}`` (standard base64, validated). Rows of strings of
different lengths are right-padded with ``""`` (our signatures treat it as padding); an
empty batch (``"instances": []``) is answered with empty outputs, as over gRPC.

Bounds (``RestOptions``): body size (413 beyond it), idle keep-alive time per connection,
concurrent connections (503 beyond them).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2, predict_pb2

from tfrec_attn.serving.manager import ModelNotFound
from tfrec_attn.serving.predict import HTTP_STATUS, call
from tfrec_attn.serving.servable import RequestError, RequestLimits, check_shape

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<rest>/metadata|:predict)?$")
_STATES = {10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}
_INT64_MAX = (1 << 63) - 1
_BODY_KEYS = ("signature_name", "instances", "inputs")


@dataclasses.dataclass(frozen=True)
class RestOptions:
    """Bounds of the REST front end.

    Args:
        max_body_bytes: int. Largest request body (413 beyond it, before it is read).
            16 MiB: the largest request within ``RequestLimits``' defaults that a client
            would send (1024 rows of 200 ids) is ~2 MB of JSON; parsing 16 MB of ids costs
            ~0.5 GB of Python objects at most (measured in docs/benchmarks.md).
        keep_alive_timeout_seconds: float. A connection idle this long (or a client this
            slow to send a request) is closed.
        max_connections: int. Open connections served at once; one more is answered 503
            and closed (each connection holds a thread).
    """

    max_body_bytes: int = 16 << 20
    keep_alive_timeout_seconds: float = 30.0
    max_connections: int = 256


# -- JSON -> tensors ---------------------------------------------------------------------------
def _leaf_decoder(dtype: tf.DType):
    """A function ``(json value, field) -> python value`` of ``dtype``, strict on types."""
    if dtype == tf.string:
        def decode(value, field):
            if isinstance(value, str):
                return value.encode("utf-8", "surrogatepass")
            if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
                try:
                    return base64.b64decode(value["b64"], validate=True)
                except (binascii.Error, ValueError) as error:
                    raise RequestError(f"{field}: invalid base64 in {{\"b64\": ...}}: {error}") from None
            raise RequestError(f"{field}: expected strings (or {{\"b64\": \"...\"}}), got "
                               f"{type(value).__name__} {json.dumps(value)[:40]}")
        return decode
    if dtype == tf.bool:
        def decode(value, field):
            if isinstance(value, bool):
                return value
            raise RequestError(f"{field}: expected true/false for {dtype.name}, got {json.dumps(value)[:40]}")
        return decode
    if dtype.is_integer:
        low, high = dtype.min, dtype.max

        def decode(value, field):
            if isinstance(value, bool) or not isinstance(value, int):
                raise RequestError(f"{field}: expected an integer for {dtype.name}, got {json.dumps(value)[:40]}")
            if not low <= value <= high:
                raise RequestError(f"{field}: {str(value)[:40]} is out of range for {dtype.name}")
            return value
        return decode
    if dtype.is_floating:
        def decode(value, field):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(f"{field}: expected a number for {dtype.name}, got {json.dumps(value)[:40]}")
            try:
                return float(value)
            except OverflowError:  # an integer beyond float range
                raise RequestError(f"{field}: {str(value)[:40]} is out of range for {dtype.name}") from None
        return decode

    def unsupported(value, field):
        raise RequestError(f"{field}: inputs of dtype {dtype.name} are not supported over REST; use gRPC")
    return unsupported


def _nested(value, depth: int, static, decode, field: str, pad):
    """Nested JSON lists -> (shape, flat values). ``depth``: dimensions still expected;
    ``static``: the signature's sizes of those dimensions (None = any); an empty list takes
    them (or 0). Ragged innermost rows are right-padded with ``pad`` when it is not None."""
    if not isinstance(value, list):
        if depth > 0:
            raise RequestError(f"{field}: expected a list ({depth} more dimension(s)), got "
                               f"{type(value).__name__} {json.dumps(value)[:40]}")
        return (), [decode(value, field)]
    if depth == 0:
        raise RequestError(f"{field}: expected a scalar, got a list (the signature's rank is lower)")
    if not value:
        return (0, *((s or 0) for s in static[1:])), []
    parts = [_nested(v, depth - 1, static[1:], decode, f"{field}[{i}]", pad) for i, v in enumerate(value)]
    shapes = {p[0] for p in parts}
    if len(shapes) > 1:
        if pad is None or depth != 2 or any(len(s) != 1 for s in shapes):
            raise RequestError(f"{field}: ragged lists (shapes {sorted(shapes)[:4]}); all rows must have "
                               "the same shape")
        width = max(s[0] for s in shapes)
        parts = [((width,), vals + [pad] * (width - len(vals))) for _, vals in parts]
    return (len(value), *parts[0][0]), [v for _, vals in parts for v in vals]


def json_to_array(value, spec: tf.TensorSpec, field: str, limits: RequestLimits) -> np.ndarray:
    """One JSON input value -> numpy array of the signature's dtype, checked with the same
    shape and limit rules as a gRPC tensor (``check_shape``)."""
    rank = spec.shape.rank
    static = spec.shape.as_list() if rank is not None else []
    depth = rank if rank is not None else 32
    if rank is None:
        static = [None] * depth
    if isinstance(value, list) and len(value) > limits.max_batch_rows and depth >= 1:
        raise RequestError(f"{field}: {len(value)} rows exceed the server's limit max_batch_rows="
                           f"{limits.max_batch_rows}; split the request")
    pad = b"" if spec.dtype == tf.string else None
    shape, values = _nested(value, depth, static, _leaf_decoder(spec.dtype), field, pad)
    check_shape(field, spec, list(shape), limits)
    if spec.dtype == tf.string:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=spec.dtype.as_numpy_dtype).reshape(shape)


def body_to_request(body, version, model_spec, limits: RequestLimits):
    """A REST predict body -> ``PredictRequest`` for ``version`` (RequestError if malformed)."""
    if not isinstance(body, dict):
        raise RequestError(f"body: must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(_BODY_KEYS))
    if unknown:
        raise RequestError(f"body: unknown key '{unknown[0]}' (allowed: {list(_BODY_KEYS)})")
    if ("instances" in body) == ("inputs" in body):
        raise RequestError("body: needs exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    name = body.get("signature_name", "")
    if not isinstance(name, str):
        raise RequestError(f"signature_name: must be a string, got {json.dumps(name)[:40]}")
    signature = version.signature(name)
    specs = version.inputs[signature]
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise RequestError(f"instances: must be a list (one entry per row), got {type(rows).__name__}")
        named = [isinstance(r, dict) for r in rows]
        if any(named) and not all(named):
            raise RequestError("instances: mixes objects and plain values; use one form for every row")
        if rows and all(named):
            for i, row in enumerate(rows):
                version.check_input_names(signature, row, f"instances[{i}]")
            values = {alias: [row[alias] for row in rows] for alias in specs}
        elif len(specs) == 1:
            values = {next(iter(specs)): rows}
        elif rows:
            raise RequestError(f"instances: signature '{signature}' has inputs {sorted(specs)}; each row "
                               "must be an object naming them")
        else:
            values = {alias: [] for alias in specs}
        fields = {alias: f"instances[*]['{alias}']" for alias in specs}
    else:
        inputs = body["inputs"]
        if not isinstance(inputs, dict):
            if len(specs) != 1:
                raise RequestError(f"inputs: signature '{signature}' has inputs {sorted(specs)}; "
                                   "'inputs' must be an object naming them")
            inputs = {next(iter(specs)): inputs}
        version.check_input_names(signature, inputs, "inputs")
        values = inputs
        fields = {alias: f"inputs['{alias}']" for alias in specs}
    request = predict_pb2.PredictRequest()
    request.model_spec.CopyFrom(model_spec)
    request.model_spec.signature_name = signature
    for alias, spec in specs.items():
        array = json_to_array(values[alias], spec, fields[alias], limits)
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(array, dtype=spec.dtype, shape=array.shape))
    return request


# -- tensors -> JSON ---------------------------------------------------------------------------
def to_json(array: np.ndarray):
    """numpy -> JSON-ready lists; non-finite floats stay NaN / Infinity / -Infinity."""
    if array.dtype == object:
        def dec(b):
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(b).decode()}
        return np.vectorize(dec, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def response_to_json(response, row_format: bool):
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    if not row_format:
        # TF Serving: a lone output's name is dropped ({"outputs": value}), as in the row format.
        if len(outputs) == 1:
            return {"outputs": to_json(next(iter(outputs.values())))}
        return {"outputs": {k: to_json(v) for k, v in outputs.items()}}
    names = sorted(outputs)
    if len(names) == 1:
        return {"predictions": to_json(outputs[names[0]])}
    n = next(iter(outputs.values())).shape[0] if outputs else 0
    columns = {k: to_json(outputs[k]) for k in names}
    return {"predictions": [{k: columns[k][i] for k in names} for i in range(n)]}


# -- HTTP ------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, bounded by ``timeout`` (idle seconds)
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall
    manager = None
    predict = None
    limits: RequestLimits = RequestLimits()
    options: RestOptions = RestOptions()

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict):
        data = json.dumps(body, allow_nan=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, unsupported method, long headers):
        JSON like ours, and the connection is closed."""
        self.close_connection = True
        try:
            self._send(code, {"error": message or self.responses.get(code, ("error",))[0]})
        except OSError:
            pass

    def _error(self, code: int, message: str):
        self._send(code, {"error": message})

    def _spec(self, match):
        """The URL's model spec; RequestError for a version that is not an int64."""
        spec = model_pb2.ModelSpec(name=match["name"])
        if match["version"]:
            number = int(match["version"])
            if number > _INT64_MAX:
                raise RequestError(f"URL: version {match['version'][:30]} is not a valid version number "
                                   "(an int64)")
            spec.version.value = number
        elif match["label"]:
            spec.version_label = match["label"]
        return spec

    def _discard_body(self):
        """Drops a body sent where none is used (so keep-alive stays in sync and the client
        is not cut off while sending); one too large or of unknown size closes the connection."""
        text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity") or \
                (text is not None and not text.strip().isdigit()):
            self.close_connection = True
        elif text is not None and int(text) > 0:
            if int(text) > 4 * self.options.max_body_bytes:
                self.close_connection = True
            self._drain(int(text))

    def do_GET(self):
        self._discard_body()
        match = _PATH.match(self.path)
        if not match or match["rest"] == ":predict":
            return self._error(404, f"no such resource: {self.path[:200]}")
        try:
            spec = self._spec(match)
        except RequestError as error:
            return self._error(400, str(error))
        if match["rest"] == "/metadata":
            def work(version):
                defs = {k: json_format.MessageToDict(v) for k, v in version.signature_defs.items()}
                return {"model_spec": {"name": version.name, "version": str(version.version)},
                        "metadata": {"signature_def": {"signature_def": defs}}}

            result, code, message = call(self.manager, spec, work)
            if code != grpc.StatusCode.OK:
                return self._error(HTTP_STATUS[code], message)
            return self._send(200, result)
        try:
            if match["label"]:
                version = self.manager.acquire(spec)  # resolves the label
                number = version.version
                version.release()
            else:
                number = spec.version.value if match["version"] else None
            statuses = self.manager.statuses(match["name"], number)
        except ModelNotFound as error:
            return self._error(404, str(error))
        return self._send(200, {"model_version_status": [
            {"version": str(v), "state": _STATES.get(s.state, "UNKNOWN"),
             "status": {"error_code": "OK" if not s.error_code else "UNKNOWN", "error_message": s.error_message}}
            for v, s in sorted(statuses.items())]})

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 411/400/413."""
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            self._error(411, "Content-Length: required (chunked bodies are not supported)")
            return None
        text = self.headers.get("Content-Length")
        if text is None:
            self.close_connection = True
            self._error(411, "Content-Length: required")
            return None
        if not text.strip().isdigit():
            self.close_connection = True
            self._error(400, f"Content-Length: not a byte count: {text[:40]!r}")
            return None
        length = int(text)
        if length > self.options.max_body_bytes:
            self.close_connection = True
            self._drain(length)
            self._error(413, f"body: {length} bytes exceed the server's limit max_body_bytes="
                             f"{self.options.max_body_bytes}")
            return None
        return self.rfile.read(length)

    def _drain(self, length: int):
        """Reads and drops up to 4x the body limit, so the client sees our answer rather
        than a reset; a larger body is cut off."""
        if length > 4 * self.options.max_body_bytes:
            return
        try:
            while length > 0:
                chunk = self.rfile.read(min(length, 1 << 20))
                if not chunk:
                    return
                length -= len(chunk)
        except OSError:
            pass

    def do_POST(self):
        match = _PATH.match(self.path)
        body_bytes = self._read_body()
        if body_bytes is None:
            return
        if not match or match["rest"] != ":predict":
            return self._error(404, f"no such resource: {self.path[:200]}")
        try:
            spec = self._spec(match)
            body = json.loads(body_bytes)
        except RequestError as error:
            return self._error(400, str(error))
        except (ValueError, RecursionError) as error:  # incl. UnicodeDecodeError, huge ints
            return self._error(400, f"body: malformed JSON: {str(error)[:200]}")

        def work(version):
            request = body_to_request(body, version, spec, self.limits)
            return response_to_json(self.predict(version, request), "instances" in body)

        result, code, message = call(self.manager, spec, work)
        if code != grpc.StatusCode.OK:
            return self._error(HTTP_STATUS[code], message)
        return self._send(200, result)

    def _unsupported(self):
        self._discard_body()
        self._error(405, f"method {self.command} not allowed (GET status/metadata, POST :predict)")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _unsupported


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once (one more gets 503)."""

    daemon_threads = True

    def __init__(self, address, handler, max_connections: int):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            data = json.dumps({"error": "too many connections; retry later"}).encode()
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: " + str(len(data)).encode()
                                + b"\r\n\r\n" + data)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class RestServer:
    """TF Serving's REST API for ``manager``.

    Args:
        manager: ModelManager.
        predict: callable ``(LoadedVersion, PredictRequest) -> PredictResponse`` (the gRPC path).
        port: int. 0 = any free port (see ``.port``).
        host: str.
        limits: RequestLimits. Checked while decoding, before tensors are built.
        options: RestOptions or None (defaults).
    """

    def __init__(self, manager, predict, port: int, host: str = "0.0.0.0",
                 limits: RequestLimits | None = None, options: RestOptions | None = None):
        options = options or RestOptions()
        handler = type("Handler", (_Handler,), {"manager": manager, "predict": staticmethod(predict),
                                                "limits": limits or RequestLimits(), "options": options,
                                                "timeout": options.keep_alive_timeout_seconds})
        self.httpd = _BoundedServer((host, port), handler, options.max_connections)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="rest", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
