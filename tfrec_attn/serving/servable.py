"""One loaded SavedModel version: request validation, execution, metadata, warmup."""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

logger = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_ELEMENTS = 1 << 24  # per input tensor; a request over this is refused, never allocated


class RequestError(ValueError):
    """The request is malformed (-> INVALID_ARGUMENT); the message names the request field."""


class LoadedVersion:
    """A SavedModel version ready to serve.

    Args:
        name: str. Model name.
        version: int.
        path: str. The version directory.
    """

    def __init__(self, name: str, version: int, path: str):
        self.name = name
        self.version = version
        self.path = path
        self._refs = 0
        self._lock = threading.Condition()
        self.loaded = tf.saved_model.load(path)
        self.functions = dict(self.loaded.signatures)
        if not self.functions:
            raise ValueError(f"{path}: SavedModel has no serving signatures")
        self.inputs = {name: fn.structured_input_signature[1] for name, fn in self.functions.items()}
        self.outputs = {name: fn.structured_outputs for name, fn in self.functions.items()}
        self.signature_defs = self._read_signature_defs(path)

    @staticmethod
    def _read_signature_defs(path: str) -> dict:
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
            proto.ParseFromString(handle.read())
        return dict(proto.meta_graphs[0].signature_def)

    # -- reference counting (unload only after in-flight requests finish) -------------
    def acquire(self) -> None:
        with self._lock:
            self._refs += 1

    def release(self) -> None:
        with self._lock:
            self._refs -= 1
            if self._refs == 0:
                self._lock.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._refs == 0, timeout)

    # -- requests ----------------------------------------------------------------------
    def signature(self, name: str) -> str:
        name = name or "serving_default"
        if name not in self.functions:
            raise RequestError(f"model_spec.signature_name: '{name}' is not a signature of model "
                               f"'{self.name}' version {self.version} (has: {sorted(self.functions)})")
        return name

    def parse_inputs(self, signature: str, inputs) -> dict[str, np.ndarray]:
        """Validates ``PredictRequest.inputs`` against the signature; returns numpy arrays."""
        specs = self.inputs[signature]
        missing = sorted(set(specs) - set(inputs))
        if missing:
            raise RequestError(f"inputs['{missing[0]}']: missing; signature '{signature}' needs "
                               f"{sorted(specs)}")
        extra = sorted(set(inputs) - set(specs))
        if extra:
            raise RequestError(f"inputs['{extra[0]}']: not an input of signature '{signature}' "
                               f"(inputs: {sorted(specs)})")
        arrays = {}
        for alias, spec in specs.items():
            arrays[alias] = tensor_proto_to_array(inputs[alias], spec, f"inputs['{alias}']")
        sizes = {a.shape[0] for a in arrays.values() if a.ndim}
        if len(sizes) > 1:
            raise RequestError(f"inputs: batch sizes differ between inputs ({sorted(sizes)})")
        return arrays

    def run(self, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fn = self.functions[signature]
        specs = self.inputs[signature]
        tensors = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in arrays.items()}
        try:
            out = fn(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            raise RequestError(f"inputs: the model rejected the request: "
                               f"{str(getattr(error, 'message', error)).splitlines()[0][:300]}") from None
        return {k: v.numpy() for k, v in out.items()}

    # -- warmup ------------------------------------------------------------------------
    def warmup(self, predict) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests``; returns how many."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not os.path.isfile(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if log.WhichOneof("log_type") != "predict_log":
                raise ValueError(f"{path}: record {count} is not a predict_log")
            predict(self, log.predict_log.request)
            count += 1
        return count


def tensor_proto_to_array(proto, spec: tf.TensorSpec, field: str) -> np.ndarray:
    """``TensorProto`` -> numpy, checking dtype, rank, static dims and size before allocating."""
    if proto.dtype != spec.dtype.as_datatype_enum:
        try:
            got = tf.dtypes.as_dtype(proto.dtype).name
        except TypeError:
            got = f"enum {proto.dtype}"
        raise RequestError(f"{field}: dtype {got} does not match the signature's {spec.dtype.name}")
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank:
        raise RequestError(f"{field}: tensor_shape has unknown rank")
    if spec.shape.rank is not None and len(dims) != spec.shape.rank:
        raise RequestError(f"{field}: rank {len(dims)} (shape {dims}) does not match the signature's "
                           f"rank {spec.shape.rank} (shape {spec.shape.as_list()})")
    if any(d < 0 for d in dims):
        raise RequestError(f"{field}: negative dimension in shape {dims}")
    for got, want in zip(dims, spec.shape.as_list() if spec.shape.rank is not None else []):
        if want is not None and got != want:
            raise RequestError(f"{field}: shape {dims} does not match the signature's {spec.shape.as_list()}")
    count = int(np.prod(dims, dtype=np.float64)) if dims else 1
    if count > MAX_ELEMENTS:
        raise RequestError(f"{field}: {count} elements exceeds the limit of {MAX_ELEMENTS}")
    if spec.dtype == tf.string:
        provided = len(proto.string_val)
    elif proto.tensor_content:
        itemsize = spec.dtype.size
        if len(proto.tensor_content) != count * itemsize:
            raise RequestError(f"{field}: tensor_content has {len(proto.tensor_content)} bytes, shape "
                               f"{dims} of {spec.dtype.name} needs {count * itemsize}")
        provided = count
    else:
        provided = sum(len(getattr(proto, f)) for f in _VALUE_FIELDS)
    if provided != count and not (provided == 1 and count >= 1):
        raise RequestError(f"{field}: shape {dims} needs {count} values, the request has {provided}")
    try:
        return tf.make_ndarray(proto)
    except Exception as error:  # malformed content of any kind
        raise RequestError(f"{field}: cannot decode tensor: {error}") from None


_VALUE_FIELDS = ("half_val", "float_val", "double_val", "int_val", "int64_val", "bool_val",
                 "uint32_val", "uint64_val")
