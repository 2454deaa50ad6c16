"""TF Serving's text-proto config files: ``ModelServerConfig`` and ``BatchingParameters``.

``ModelServerConfig`` comes from ``tensorflow-serving-api``. ``BatchingParameters``
(``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``) is not shipped
in that package, so its message is declared here with the same package, names, field
numbers and types, and parsed with protobuf's own text-format parser.
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


class ServingConfigError(ValueError):
    """A serving config file does not parse or names something impossible."""


def _batching_parameters_class():
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    f = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    m = f.message_type.add(name="BatchingParameters")
    T = descriptor_pb2.FieldDescriptorProto
    fields = [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
    ]
    for name, number, type_name in fields:
        m.field.add(name=name, number=number, type=T.TYPE_MESSAGE, type_name=type_name,
                    label=T.LABEL_OPTIONAL)
    m.field.add(name="allowed_batch_sizes", number=6, type=T.TYPE_INT64, label=T.LABEL_REPEATED)
    m.field.add(name="pad_variable_length_inputs", number=7, type=T.TYPE_BOOL, label=T.LABEL_OPTIONAL)
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


BatchingParametersProto = _batching_parameters_class()


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


def parse_model_server_config(text: str, path: str = "<model config>"):
    """A ``tensorflow.serving.ModelServerConfig`` from its text format."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ServingConfigError(f"{path}:{error}") from None
    if config.WhichOneof("config") != "model_config_list":
        raise ServingConfigError(f"{path}: only model_config_list is supported")
    names = [m.name for m in config.model_config_list.config]
    for model in config.model_config_list.config:
        if not model.name or not model.base_path:
            raise ServingConfigError(f"{path}: every config needs name and base_path (got {model.name!r})")
    if len(set(names)) != len(names):
        raise ServingConfigError(f"{path}: duplicate model names {names}")
    return config


def read_model_server_config(path: str):
    with open(path, encoding="utf-8") as handle:
        return parse_model_server_config(handle.read(), path)


def single_model_config(name: str, base_path: str):
    """What ``--model_name`` / ``--model_base_path`` mean: one model, latest version."""
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    return config
