"""TF Serving's REST API (``--rest_api_port``) on top of the same model manager.

    GET  /v1/models/NAME[/versions/N|/labels/L]            -> model version status
    GET  /v1/models/NAME[/versions/N|/labels/L]/metadata   -> signature defs
    POST /v1/models/NAME[/versions/N|/labels/L]:predict
         {"signature_name": "...", "instances": [...]}  (row format)  -> {"predictions": [...]}
         {"signature_name": "...", "inputs": {...}}     (columnar)    -> {"outputs": {...}}

A body is decoded into a ``PredictRequest`` by the JSON codec
(:mod:`tfrec_attn.serving.rest_codec`: row and columnar formats, b64 strings, non-finite
floats) and runs through the gRPC path (``tfrec_attn.serving.predict``): the same
validation, limits and status codes, mapped to HTTP as TF Serving does
(INVALID_ARGUMENT -> 400, NOT_FOUND -> 404, UNAVAILABLE -> 503). Every error is
``{"error": "..."}`` naming the request field.

Bounds (``RestOptions``): body size (413 beyond it), idle keep-alive time per connection,
concurrent connections (503 beyond them).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2

from tfrec_attn.serving.manager import ModelNotFound
from tfrec_attn.serving.predict import HTTP_STATUS, call
from tfrec_attn.serving.rest_codec import body_to_request, response_to_json
from tfrec_attn.serving.servable import RequestError, RequestLimits

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<rest>/metadata|:predict)?$")
_STATES = {10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}
_INT64_MAX = (1 << 63) - 1


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
        except MemoryError:
            return self._error(HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED],
                               "body: the server ran out of memory parsing the JSON")

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
