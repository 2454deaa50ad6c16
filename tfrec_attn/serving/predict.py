"""The request path both front ends share: ``PredictRequest`` -> validated arrays -> the
model -> ``PredictResponse``, and one mapping from failures to status codes.

gRPC calls ``predict`` with the request it received; REST decodes its JSON body into a
``PredictRequest`` first (as TF Serving's REST layer does), so a request is accepted,
refused or bounded the same way whichever port it came in on. Status codes follow TF
Serving: a malformed or over-limit request is INVALID_ARGUMENT (HTTP 400), an unknown
model/version/label NOT_FOUND (404), a full batch queue UNAVAILABLE (503), a request the
server has no memory for RESOURCE_EXHAUSTED (429), anything else INTERNAL (500) with the
error logged, never a dropped connection.
"""

from __future__ import annotations

import logging

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from tfrec_attn.serving.batching import Batcher, QueueFull
from tfrec_attn.serving.manager import ModelManager, ModelNotFound
from tfrec_attn.serving.servable import (
    UNLIMITED,
    LoadedVersion,
    OutOfMemory,
    RequestError,
    RequestLimits,
)

logger = logging.getLogger(__name__)

# google.rpc.Code -> HTTP status, as in TF Serving's REST handler (and Google's API design guide).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def predict(version: LoadedVersion, request, batcher: Batcher | None = None,
            limits: RequestLimits = UNLIMITED):
    """Runs a ``PredictRequest`` on a loaded version; raises RequestError when malformed or
    over ``limits``."""
    signature = version.signature(request.model_spec.signature_name)
    arrays = version.parse_inputs(signature, request.inputs, limits)
    wanted = list(request.output_filter)
    unknown = [name for name in wanted if name not in version.outputs[signature]]
    if unknown:
        raise RequestError(f"output_filter: '{unknown[0]}' is not an output of signature '{signature}' "
                           f"(outputs: {sorted(version.outputs[signature])})")
    outputs = batcher.submit(version, signature, arrays) if batcher else version.run(signature, arrays)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = version.name
    response.model_spec.version.value = version.version
    response.model_spec.signature_name = signature
    for name, value in outputs.items():
        if not wanted or name in wanted:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return response


def call(manager: ModelManager, model_spec, work):
    """Runs ``work(version)`` on the version ``model_spec`` names, holding a reference.

    Returns ``(result, code, message)``: ``code`` is ``grpc.StatusCode.OK`` and ``message``
    empty on success, else ``result`` is None and the failure is mapped to a status code.
    """
    try:
        version = manager.acquire(model_spec)
    except ModelNotFound as error:
        return None, grpc.StatusCode.NOT_FOUND, str(error)
    try:
        return work(version), grpc.StatusCode.OK, ""
    except RequestError as error:
        return None, grpc.StatusCode.INVALID_ARGUMENT, str(error)
    except QueueFull as error:
        return None, grpc.StatusCode.UNAVAILABLE, str(error)
    except (OutOfMemory, MemoryError) as error:  # the request's size; no traceback, the server goes on
        logger.warning("request to %s ran out of memory: %s", model_spec.name, error)
        return None, grpc.StatusCode.RESOURCE_EXHAUSTED, str(error) or "the server ran out of memory for this request"
    except Exception as error:  # never let a request take the server down
        logger.exception("request to %s failed", model_spec.name)
        return None, grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"[:1000]
    finally:
        version.release()
