"""gRPC servicers: ``tensorflow.serving.PredictionService``, ``ModelService``, health.

Status codes follow TF Serving: unknown model/version/label -> NOT_FOUND; a malformed
request (missing/extra input, wrong dtype/rank/shape/size, undecodable tensor, unknown
signature or output filter) or one over the server's ``RequestLimits`` (rows, items per
row) -> INVALID_ARGUMENT naming the request field or limit; a full batch queue ->
UNAVAILABLE. No request can take the server down. The request path itself is shared
with the REST API (``tfrec_attn.serving.predict``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent import futures

import grpc
import tensorflow as tf
from google.protobuf import any_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from tfrec_attn.serving.batching import Batcher
from tfrec_attn.serving.config import BatchingOptions
from tfrec_attn.serving.manager import ModelManager, ModelNotFound
from tfrec_attn.serving.predict import call, predict
from tfrec_attn.serving.servable import RequestLimits

__all__ = ["ModelServer", "predict", "serve"]

logger = logging.getLogger(__name__)

SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager, batcher: Batcher | None = None,
                 limits: RequestLimits | None = None):
        self.manager = manager
        self.batcher = batcher
        self.limits = limits or RequestLimits()

    def _with_version(self, request, context, work):
        """Runs ``work(version)``; maps failures to status codes (abort outside ``try``)."""
        result, code, message = call(self.manager, request.model_spec, work)
        if code != grpc.StatusCode.OK:
            context.abort(code, message)
        return result

    def Predict(self, request, context):
        return self._with_version(request, context, lambda v: predict(v, request, self.batcher, self.limits))

    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"metadata_field: must be ['signature_def'], got {fields}")

        def work(version):
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = version.name
            response.model_spec.version.value = version.version
            signatures = get_model_metadata_pb2.SignatureDefMap()
            for name, definition in version.signature_defs.items():
                signatures.signature_def[name].CopyFrom(definition)
            packed = any_pb2.Any()
            packed.Pack(signatures)
            response.metadata["signature_def"].CopyFrom(packed)
            return response

        return self._with_version(request, context, work)

    def _unimplemented(self, request, context, kind):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      f"{kind}: model '{request.model_spec.name}' has no {kind.lower()} signature; "
                      "use Predict")

    def Classify(self, request, context):
        self._unimplemented(request, context, "Classify")

    def Regress(self, request, context):
        self._unimplemented(request, context, "Regress")

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference: use Predict")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        try:
            statuses = self.manager.statuses(spec.name, version)
        except ModelNotFound as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        response = get_model_status_pb2.GetModelStatusResponse()
        for number, status in sorted(statuses.items()):
            entry = response.model_version_status.add()
            entry.version = number
            entry.state = status.state
            entry.status.error_code = status.error_code
            entry.status.error_message = status.error_message
        return response

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      "HandleReloadConfigRequest: restart with the new --model_config_file")


class ModelServer:
    """The local model server.

    Args:
        config: tensorflow.serving.ModelServerConfig.
        port: int. gRPC port (0 = any free port; see ``.port`` after ``start``).
        host: str. Interface to bind.
        poll_wait_seconds: float. File-system poll period for new versions.
        batching: BatchingOptions or None (no server-side batching).
        max_workers: int. gRPC handler threads.
        max_message_bytes: int. Largest request/response accepted.
        rest_port: int or None. Also serve TF Serving's REST API there (0 = any free port).
        limits: RequestLimits or None (the defaults). Bounds on one Predict request's rows and
            items per row, for gRPC and REST alike.
        rest_options: RestOptions or None (the defaults). REST body size, idle keep-alive
            timeout, concurrent connections.
    """

    def __init__(self, config, port: int = 8500, host: str = "0.0.0.0", poll_wait_seconds: float = 1.0,
                 batching: BatchingOptions | None = None, max_workers: int = 32,
                 max_message_bytes: int = 64 << 20, rest_port: int | None = None,
                 limits: RequestLimits | None = None, rest_options=None):
        self.limits = limits or RequestLimits()
        self.batcher = Batcher(batching, lambda v, s, a: v.run(s, a)) if batching else None
        self.manager = ModelManager(config, poll_wait_seconds, warmup=lambda v, r: predict(v, r))
        self.health = health.HealthServicer()
        self.manager.listeners.append(self._update_health)
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.so_reuseport", 0)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.manager, self.batcher, self.limits), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self.manager), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.host, self._port, self._rest_port, self._rest_options = host, port, rest_port, rest_options
        self.port = None  # bound by start(), once the models are loaded (as TF Serving does)
        self.rest = None

    def _update_health(self, manager):
        state = health_pb2.HealthCheckResponse.SERVING if manager.all_available() \
            else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", *SERVICES):
            self.health.set(service, state)

    def start(self) -> ModelServer:
        """Loads the models, then binds and opens the ports. Raises ``ServingConfigError``
        (nothing bound) when a model has nothing to serve, OSError when a port is taken."""
        try:
            self.manager.start()
        except BaseException:
            self.manager.stop()
            if self.batcher:
                self.batcher.close()
            raise
        self.port = self.server.add_insecure_port(f"{self.host}:{self._port}")
        if self.port == 0:
            raise OSError(f"cannot bind {self.host}:{self._port}")
        if self._rest_port is not None:
            from tfrec_attn.serving.rest import RestServer

            self.rest = RestServer(self.manager, lambda v, r: predict(v, r, self.batcher, self.limits),
                                   self._rest_port, self.host, self.limits, self._rest_options)
        self.server.start()
        if self.rest:
            self.rest.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        if self.rest:
            self.rest.stop()
        self.server.stop(grace).wait()
        self.manager.stop()
        if self.batcher:
            self.batcher.close()

    def wait(self) -> None:
        self.server.wait_for_termination()


def serve(config, port: int, *, host: str = "0.0.0.0", poll_wait_seconds: float = 1.0,
          batching: BatchingOptions | None = None, rest_port: int = 0, ready_message: bool = True,
          max_workers: int = 32, limits: RequestLimits | None = None, rest_options=None) -> int:
    """Runs until SIGTERM/SIGINT; prints ``listening on HOST:PORT`` once models are loaded.

    ``rest_port`` 0 disables REST (as in TF Serving). ``limits`` / ``rest_options``: None
    takes the defaults of ``RequestLimits`` / ``RestOptions``. Raises ``ServingConfigError``
    when a model's base path is missing, empty or has no version that loads.
    """
    server = ModelServer(config, port, host, poll_wait_seconds, batching, max_workers=max_workers,
                         rest_port=rest_port or None, limits=limits, rest_options=rest_options).start()

    def describe(model):
        refused = sorted(v for v, s in model.status.items() if s.error_message and v not in model.available)
        return (f"{model.name} (versions {sorted(model.available)}"
                + (f"; refused {refused}, see the log or GetModelStatus" if refused else "") + ")")

    models = ", ".join(describe(m) for m in server.manager.models.values())
    if ready_message:
        rest = f"; REST on {host}:{server.rest.port}" if server.rest else ""
        threads = (f"TF threads: intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'all'}, "
                   f"inter-op {tf.config.threading.get_inter_op_parallelism_threads() or 'default'}")
        print(f"tfrec-attn serve: listening on {host}:{server.port}{rest}; models: {models}; {threads}",
              flush=True)
    stopped = threading.Event()

    def shutdown(signum, frame):
        if not stopped.is_set():
            stopped.set()
            threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    server.wait()
    print("tfrec-attn serve: stopped", file=sys.stderr, flush=True)
    return 0
