"""TF Serving's text-proto config files: ``ModelServerConfig`` and ``BatchingParameters``.

``ModelServerConfig`` comes from ``tensorflow-serving-api``. ``BatchingParameters``
(``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``) and
``MonitoringConfig`` (``tensorflow_serving/config/monitoring_config.proto``) are not
shipped in that package, so their messages are declared here with the same package,
names, field numbers and types, and parsed with protobuf's own text-format parser.
"""

from __future__ import annotations

import dataclasses

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,  # noqa: F401  (registers wrappers.proto in the default pool)
)
from tensorflow_serving.config import model_server_config_pb2

from tfrec_attn.config import ConfigError


class ServingConfigError(ConfigError):
    """A serving config file does not parse or names something impossible, or a model's base
    path has nothing to serve. A ``ConfigError`` (so a ``ValueError``): the CLI prints it as
    one ``error: ...`` line and exits with 2."""


def _declare_messages():
    """Declares TF Serving's BatchingParameters and MonitoringConfig in a private pool."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    T = descriptor_pb2.FieldDescriptorProto

    def add(message, name, number, kind, type_name="", label=T.LABEL_OPTIONAL):
        field = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name

    batching = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    m = batching.message_type.add(name="BatchingParameters")
    for name, number in (("max_batch_size", 1), ("batch_timeout_micros", 2),
                         ("max_enqueued_batches", 3), ("num_batch_threads", 4)):
        add(m, name, number, T.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    add(m, "thread_pool_name", 5, T.TYPE_MESSAGE, ".google.protobuf.StringValue")
    add(m, "allowed_batch_sizes", 6, T.TYPE_INT64, label=T.LABEL_REPEATED)
    add(m, "pad_variable_length_inputs", 7, T.TYPE_BOOL)
    pool.Add(batching)

    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving",
        syntax="proto3")
    prometheus = monitoring.message_type.add(name="PrometheusConfig")
    add(prometheus, "enable", 1, T.TYPE_BOOL)
    add(prometheus, "path", 2, T.TYPE_STRING)
    config = monitoring.message_type.add(name="MonitoringConfig")
    add(config, "prometheus_config", 1, T.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    pool.Add(monitoring)

    def get(name):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    return get("tensorflow.serving.BatchingParameters"), get("tensorflow.serving.MonitoringConfig")


BatchingParametersProto, MonitoringConfigProto = _declare_messages()


@dataclasses.dataclass
class BatchingOptions:
    """The parts of ``BatchingParameters`` this server applies (TF Serving's defaults)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple = ()
    pad_variable_length_inputs: bool = False


def parse_batching_parameters(text: str, path: str = "<batching parameters>") -> BatchingOptions:
    proto = BatchingParametersProto()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as error:
        raise ServingConfigError(f"{path}:{error}") from None
    options = BatchingOptions()
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        if proto.HasField(name):
            setattr(options, name, getattr(proto, name).value)
    options.allowed_batch_sizes = tuple(proto.allowed_batch_sizes)
    options.pad_variable_length_inputs = proto.pad_variable_length_inputs
    if options.max_batch_size < 1 or options.num_batch_threads < 1:
        raise ServingConfigError(f"{path}: max_batch_size and num_batch_threads must be >= 1")
    if options.allowed_batch_sizes and options.allowed_batch_sizes[-1] != options.max_batch_size:
        raise ServingConfigError(f"{path}: the last allowed_batch_sizes entry must equal max_batch_size")
    return options


def read_batching_parameters(path: str) -> BatchingOptions:
    with open(path, encoding="utf-8") as handle:
        return parse_batching_parameters(handle.read(), path)


def parse_monitoring_config(text: str, path: str = "<monitoring config>"):
    proto = MonitoringConfigProto()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as error:
        raise ServingConfigError(f"{path}:{error}") from None
    return proto


def _check_model_server_config(config, path: str):
    """The rules this server and TF Serving share: a model_config_list of named models with
    base paths, each name once."""
    if config.WhichOneof("config") != "model_config_list":
        raise ServingConfigError(f"{path}: only model_config_list is supported")
    names = [m.name for m in config.model_config_list.config]
    for model in config.model_config_list.config:
        if not model.name or not model.base_path:
            raise ServingConfigError(f"{path}: every config needs name and base_path (got {model.name!r})")
    if len(set(names)) != len(names):
        raise ServingConfigError(f"{path}: duplicate model names {names}")
    return config


def parse_model_server_config(text: str, path: str = "<model config>"):
    """A ``tensorflow.serving.ModelServerConfig`` from its text format."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ServingConfigError(f"{path}:{error}") from None
    return _check_model_server_config(config, path)


def read_model_server_config(path: str):
    with open(path, encoding="utf-8") as handle:
        return parse_model_server_config(handle.read(), path)


def model_server_config(models, path: str = "<model config>"):
    """A ``ModelServerConfig`` serving the newest version of each model (TF Serving's default
    policy, written out): a new version takes traffic once loaded, the previous one unloads.

    Args:
        models: iterable of ``(name, base_path)`` pairs; ``base_path`` holds integer version
            directories (``OUTPUT/export/<name>``).
        path: str. Names the config in errors (ServingConfigError: an empty or repeated name).

    Example:
        >>> model_server_config([("retrieval", "/models/retrieval")]).model_config_list.config[0].name
        'retrieval'
    """
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.SetInParent()
    for name, base_path in models:
        model = config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
        model.model_version_policy.latest.num_versions = 1
    return _check_model_server_config(config, path)


def model_server_config_text(models, comment: str = "") -> str:
    """:func:`model_server_config` in the text format ``--model_config_file`` reads (protobuf's
    ``text_format``), after ``comment`` as ``#`` lines."""
    header = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines())
    return header + text_format.MessageToString(model_server_config(models))


def write_model_server_config(path: str, models, comment: str = "") -> str:
    """Writes :func:`model_server_config_text` to ``path`` (TF Serving's ``models.config``);
    returns ``path``.

    Example:
        >>> write_model_server_config("runs/main/export/models.config",
        ...                           [("retrieval", "/abs/runs/main/export/retrieval")])
        'runs/main/export/models.config'
    """
    text = model_server_config_text(models, comment)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def single_model_config(name: str, base_path: str):
    """What ``--model_name`` / ``--model_base_path`` mean: one model, latest version."""
    return model_server_config([(name, base_path)])
