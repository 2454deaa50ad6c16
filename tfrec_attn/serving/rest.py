"""TF Serving's REST API (``--rest_api_port``) on top of the same model manager.

    GET  /v1/models/NAME[/versions/N]            -> model version status
    GET  /v1/models/NAME[/versions/N]/metadata   -> signature defs
    POST /v1/models/NAME[/versions/N|/labels/L]:predict
         {"signature_name": "...", "instances": [...]}  (row format)  -> {"predictions": [...]}
         {"signature_name": "...", "inputs": {...}}     (columnar)    -> {"outputs": {...}}

Rows of strings of different lengths are right-padded with ``""`` (our signatures
treat it as padding). Errors answer ``{"error": "..."}`` with 400 (bad request) or 404.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2

from tfrec_attn.serving.manager import ModelNotFound
from tfrec_attn.serving.servable import RequestError

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<rest>/metadata|:predict)?$")
_STATES = {10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


def _to_array(value, dtype) -> np.ndarray:
    if dtype.name == "string":
        def enc(v):
            if isinstance(v, dict) and "b64" in v:
                return base64.b64decode(v["b64"])
            if not isinstance(v, str):
                raise RequestError(f"expected strings, got {type(v).__name__}")
            return v.encode("utf-8")

        rows = value if isinstance(value, list) else [value]
        if rows and all(isinstance(r, list) for r in rows):
            width = max((len(r) for r in rows), default=0)
            return np.array([[enc(v) for v in r] + [b""] * (width - len(r)) for r in rows],
                            dtype=object).reshape(len(rows), width)
        return np.array([enc(v) for v in rows], dtype=object)
    try:
        return np.asarray(value, dtype=dtype.as_numpy_dtype)
    except (TypeError, ValueError) as error:
        raise RequestError(f"cannot convert to {dtype.name}: {error}") from None


def _to_json(array: np.ndarray):
    if array.dtype == object:
        def dec(b):
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(b).decode()}
        return np.vectorize(dec, otypes=[object])(array).tolist() if array.size else array.tolist()
    return np.where(np.isfinite(array), array, np.nan).tolist() if array.dtype.kind == "f" else array.tolist()


class _Handler(BaseHTTPRequestHandler):
    manager = None
    run = None

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict):
        data = json.dumps(body, allow_nan=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _spec(self, match):
        spec = model_pb2.ModelSpec(name=match["name"])
        if match["version"]:
            spec.version.value = int(match["version"])
        elif match["label"]:
            spec.version_label = match["label"]
        return spec

    def do_GET(self):
        match = _PATH.match(self.path)
        if not match or match["rest"] == ":predict":
            return self._send(404, {"error": f"no such resource: {self.path}"})
        try:
            if match["rest"] == "/metadata":
                version = self.manager.acquire(self._spec(match))
                try:
                    defs = {k: json_format.MessageToDict(v) for k, v in version.signature_defs.items()}
                    return self._send(200, {"model_spec": {"name": version.name, "version": str(version.version)},
                                            "metadata": {"signature_def": {"signature_def": defs}}})
                finally:
                    version.release()
            number = int(match["version"]) if match["version"] else None
            statuses = self.manager.statuses(match["name"], number)
        except ModelNotFound as error:
            return self._send(404, {"error": str(error)})
        return self._send(200, {"model_version_status": [
            {"version": str(v), "state": _STATES.get(s.state, "UNKNOWN"),
             "status": {"error_code": "OK" if not s.error_code else "UNKNOWN", "error_message": s.error_message}}
            for v, s in sorted(statuses.items())]})

    def do_POST(self):
        match = _PATH.match(self.path)
        if not match or match["rest"] != ":predict":
            return self._send(404, {"error": f"no such resource: {self.path}"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise RequestError("body must be a JSON object")
        except (ValueError, RequestError) as error:
            return self._send(400, {"error": f"malformed JSON body: {error}"})
        try:
            version = self.manager.acquire(self._spec(match))
        except ModelNotFound as error:
            return self._send(404, {"error": str(error)})
        try:
            signature = version.signature(body.get("signature_name", ""))
            specs = version.inputs[signature]
            if "instances" in body:
                rows = body["instances"]
                if not isinstance(rows, list):
                    raise RequestError("instances must be a list")
                if len(specs) == 1:
                    alias = next(iter(specs))
                    rows = [r[alias] if isinstance(r, dict) else r for r in rows]
                    arrays = {alias: _to_array(rows, specs[alias].dtype)}
                else:
                    arrays = {a: _to_array([r[a] for r in rows], s.dtype) for a, s in specs.items()}
            elif "inputs" in body:
                inputs = body["inputs"]
                if len(specs) == 1 and not isinstance(inputs, dict):
                    inputs = {next(iter(specs)): inputs}
                missing = sorted(set(specs) - set(inputs))
                if missing:
                    raise RequestError(f"inputs['{missing[0]}']: missing")
                arrays = {a: _to_array(inputs[a], s.dtype) for a, s in specs.items()}
            else:
                raise RequestError("body needs 'instances' or 'inputs'")
            for alias, array in arrays.items():
                if specs[alias].shape.rank is not None and array.ndim != specs[alias].shape.rank:
                    raise RequestError(f"inputs['{alias}']: rank {array.ndim} does not match the "
                                       f"signature's rank {specs[alias].shape.rank}")
            outputs = self.run(version, signature, arrays)
        except (RequestError, KeyError, TypeError) as error:
            return self._send(400, {"error": str(error)})
        finally:
            version.release()
        if "instances" in body:
            names = sorted(outputs)
            if len(names) == 1:
                return self._send(200, {"predictions": _to_json(outputs[names[0]])})
            n = next(iter(outputs.values())).shape[0]
            return self._send(200, {"predictions": [{k: _to_json(outputs[k][i]) for k in names} for i in range(n)]})
        return self._send(200, {"outputs": {k: _to_json(v) for k, v in outputs.items()}})


class RestServer:
    def __init__(self, manager, run, port: int, host: str = "0.0.0.0"):
        handler = type("Handler", (_Handler,), {"manager": manager, "run": staticmethod(run)})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="rest", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
