"""TF Serving's REST JSON codec: a predict body -> ``PredictRequest``, a ``PredictResponse``
-> JSON. The HTTP server that uses it is :mod:`tfrec_attn.serving.rest`.

    {"signature_name": "...", "instances": [...]}  (row format)  -> {"predictions": [...]}
    {"signature_name": "...", "inputs": {...}}     (columnar)    -> {"outputs": {...}}

Values are checked against the signature with the same shape and limit rules as a gRPC
tensor (``check_shape``); every problem is a ``RequestError`` naming the request field.

JSON follows TF Serving's "JSON conformance": floats may be ``NaN``, ``Infinity`` and
``-Infinity`` in requests and responses (a ``-inf`` score stays ``-Infinity``). Strings are
UTF-8 text or ``{"b64": "..."}`` (standard base64, validated). Rows of strings of
different lengths are right-padded with ``""`` (our signatures treat it as padding); an
empty batch (``"instances": []``) is answered with empty outputs, as over gRPC.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from tfrec_attn.serving.servable import RequestError, RequestLimits, check_shape

_BODY_KEYS = ("signature_name", "instances", "inputs")


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
    """A ``PredictResponse`` -> the REST answer: ``{"predictions": [...]}`` (one object per row,
    or the lone output's rows) for a row-format request, else ``{"outputs": ...}``."""
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
