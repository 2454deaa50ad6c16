"""One loaded SavedModel version: request validation, execution, metadata, warmup.

Every request reaches the model through ``LoadedVersion.parse_inputs`` (gRPC tensors, and
REST bodies once decoded), so both front ends validate the same way and enforce the same
``RequestLimits``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import re
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


class OutOfMemory(RuntimeError):
    """The server ran out of memory for this request (-> RESOURCE_EXHAUSTED, as in TF
    Serving); the server keeps serving."""


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one Predict request may cost; beyond it the request is refused before any work.

    TF Serving bounds a request only by its message size; a few hundred KB of string ids can
    still ask for 10^5 rows (measured: 16 s and +2.6 GB before failing), so the rows and
    the items per row are bounded too.

    Args:
        max_batch_rows: int. Rows (dimension 0) of any input. 1024: one request up to a full
            server-side batch (TF Serving's default ``max_batch_size`` is 1000); the default
            model costs ~26 KB of server memory per row, so ~30 MB at the limit.
        max_history_length: int. Items per row of any input (history length, candidates per
            row). 10,000: above the longest MovieLens-1M user (2,314 events) and far above
            what the model reads (``model.max_len``, 200 by default: longer histories are cut
            in the graph), so the limit only refuses requests that are wrong or hostile.
        max_elements: int. Values in one input tensor, whatever its shape.
    """

    max_batch_rows: int = 1024
    max_history_length: int = 10_000
    max_elements: int = MAX_ELEMENTS

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"RequestLimits.{field.name} must be >= 1, got {getattr(self, field.name)}")


UNLIMITED = RequestLimits(max_batch_rows=MAX_ELEMENTS, max_history_length=MAX_ELEMENTS)


def check_shape(field: str, spec: tf.TensorSpec, dims: list[int], limits: RequestLimits) -> int:
    """Checks a request tensor's shape against the signature and ``limits`` (nothing is
    allocated yet); returns its number of values. Shared by the gRPC and REST front ends."""
    if spec.shape.rank is not None and len(dims) != spec.shape.rank:
        raise RequestError(f"{field}: rank {len(dims)} (shape {dims}) does not match the signature's "
                           f"rank {spec.shape.rank} (shape {spec.shape.as_list()})")
    if any(d < 0 for d in dims):
        raise RequestError(f"{field}: negative dimension in shape {dims}")
    for got, want in zip(dims, spec.shape.as_list() if spec.shape.rank is not None else []):
        if want is not None and got != want:
            raise RequestError(f"{field}: shape {dims} does not match the signature's {spec.shape.as_list()}")
    if dims and dims[0] > limits.max_batch_rows:
        raise RequestError(f"{field}: {dims[0]} rows exceed the server's limit max_batch_rows="
                           f"{limits.max_batch_rows}; split the request")
    per_row = math.prod(dims[1:])  # exact Python ints: no overflow on 2^40-sized dims
    if per_row > limits.max_history_length:
        raise RequestError(f"{field}: {per_row} items per row exceed the server's limit "
                           f"max_history_length={limits.max_history_length}; send the most recent items")
    count = math.prod(dims)
    if count > limits.max_elements:
        raise RequestError(f"{field}: {count} elements exceeds the limit of {limits.max_elements}")
    return count


# -- op libraries exports may need beyond core TensorFlow -------------------------------
# (module, pip requirement, what needs it). TF Serving links tensorflow_text's ops into
# tensorflow_model_server; ScaNN's are only in TFRS-based servers like this one.
OP_LIBRARIES = (("tensorflow_text", "tensorflow-text==2.20.*", "in-graph text tokenization (BERT)"),
                ("scann", "scann==1.4.2", "exports made with export.index: scann"))
_op_library_errors: dict[str, str] | None = None
_op_library_lock = threading.Lock()


def register_op_libraries() -> dict[str, str]:
    """Imports ``tensorflow_text`` and ``scann`` once so their ops are registered before a
    SavedModel that uses them is loaded; returns ``{module: import error}`` for those that
    could not be imported (their ops then fail the load with a message naming the fix)."""
    global _op_library_errors
    with _op_library_lock:
        if _op_library_errors is None:
            errors = {}
            for module, _, _ in OP_LIBRARIES:
                try:
                    importlib.import_module(module)
                except Exception as error:  # missing, or built against another TF
                    errors[module] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    logger.info("op library %s not available: %s", module, errors[module])
            _op_library_errors = errors
        return dict(_op_library_errors)


def unregistered_op_message(path: str, op: str, import_errors: dict[str, str]) -> str:
    """The load error for a SavedModel whose op ``op`` no imported library registers."""
    module, requirement, purpose = OP_LIBRARIES[1] if op.startswith("Scann") else OP_LIBRARIES[0]
    if module in import_errors:
        return (f"{path}: uses op '{op}', which is not registered; it is likely from {module} "
                f"({purpose}), which this server could not import ({import_errors[module]}); "
                f"pip install '{requirement}'")
    return (f"{path}: uses op '{op}', which neither TensorFlow nor the imported op libraries "
            f"({', '.join(m for m, _, _ in OP_LIBRARIES)}) register; was it exported with another "
            "TensorFlow version or a custom op library?")


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
        import_errors = register_op_libraries()
        try:
            self.loaded = tf.saved_model.load(path)
        except Exception as error:
            match = re.search(r"Op type not registered '([^']+)'", str(error))
            if match:
                raise ValueError(unregistered_op_message(path, match.group(1), import_errors)) from None
            raise
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

    def check_input_names(self, signature: str, names, field: str = "inputs") -> None:
        """Every input of the signature, nothing else (the gRPC and REST rule)."""
        specs = self.inputs[signature]
        missing = sorted(set(specs) - set(names))
        if missing:
            raise RequestError(f"{field}['{missing[0]}']: missing; signature '{signature}' needs "
                               f"{sorted(specs)}")
        extra = sorted(set(names) - set(specs))
        if extra:
            raise RequestError(f"{field}['{str(extra[0])[:100]}']: not an input of signature '{signature}' "
                               f"(inputs: {sorted(specs)})")

    def parse_inputs(self, signature: str, inputs, limits: RequestLimits = UNLIMITED) -> dict[str, np.ndarray]:
        """Validates ``PredictRequest.inputs`` against the signature and ``limits``; returns
        numpy arrays."""
        specs = self.inputs[signature]
        self.check_input_names(signature, inputs)
        arrays = {}
        for alias, spec in specs.items():
            arrays[alias] = tensor_proto_to_array(inputs[alias], spec, f"inputs['{alias}']", limits)
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
            raise RequestError(f"inputs: the model rejected the request: {_model_error(error)}") from None
        except tf.errors.ResourceExhaustedError as error:
            raise OutOfMemory(f"inputs: the model ran out of memory for this request ({_model_error(error)}); "
                              "send fewer rows, candidates or items per row") from None
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


def _model_error(error: Exception) -> str:
    """The line of a graph error that says what is wrong: an in-graph check's message (an
    ``Assert`` names the input), else the first line that is not TF's generic header."""
    text = str(getattr(error, "message", error))
    match = re.search(r"assertion failed: \[(.*?)\]", text)
    if match:
        return match.group(1)[:300]
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith(("Graph execution error", "Detected at node",
                                                              "<stack traces unavailable>"))]
    return (lines[0] if lines else text)[:300]


def tensor_proto_to_array(proto, spec: tf.TensorSpec, field: str,
                          limits: RequestLimits = UNLIMITED) -> np.ndarray:
    """``TensorProto`` -> numpy, checking dtype, rank, static dims and limits before allocating."""
    if proto.dtype != spec.dtype.as_datatype_enum:
        try:
            got = tf.dtypes.as_dtype(proto.dtype).name
        except TypeError:
            got = f"enum {proto.dtype}"
        raise RequestError(f"{field}: dtype {got} does not match the signature's {spec.dtype.name}")
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank:
        raise RequestError(f"{field}: tensor_shape has unknown rank")
    count = check_shape(field, spec, dims, limits)
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
    except MemoryError:  # the server's trouble, not a malformed tensor
        raise OutOfMemory(f"{field}: the server ran out of memory decoding the tensor") from None
    except Exception as error:  # malformed content of any kind
        raise RequestError(f"{field}: cannot decode tensor: {error}") from None


_VALUE_FIELDS = ("half_val", "float_val", "double_val", "int_val", "int64_val", "bool_val",
                 "uint32_val", "uint64_val")
