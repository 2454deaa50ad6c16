"""``tfrec-attn serve``: the TF-Serving-compatible model server, with TF Serving's flags."""

from __future__ import annotations

import os

from tfrec_attn.app.commands.common import CLIError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="TF-Serving-compatible gRPC model server (flags as in TF Serving)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 = any free port)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--model_name", default="retrieval")
    p.add_argument("--model_base_path", help="directory of integer version directories")
    p.add_argument("--model_config_file", help="ModelServerConfig text proto (several models)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
    p.add_argument("--enable_batching", action="store_true")
    p.add_argument("--batching_parameters_file")
    p.add_argument("--rest_api_port", type=int, default=0, help="also serve TF Serving's REST API")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads one op may use (0 = TensorFlow's default: all cores)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="ops run concurrently (0 = TensorFlow's default)")
    p.add_argument("--grpc_max_threads", type=int, default=32, help="gRPC request handler threads")
    p.add_argument("--max_batch_rows", type=int, default=1024,
                   help="rows per Predict request, gRPC and REST (INVALID_ARGUMENT beyond; default 1024)")
    p.add_argument("--max_history_length", type=int, default=10_000,
                   help="items per row of any input (INVALID_ARGUMENT beyond; default 10000)")
    p.add_argument("--rest_max_body_bytes", type=int, default=16 << 20,
                   help="largest REST request body (413 beyond; default 16 MiB)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tfrec_attn.serving import serve
    from tfrec_attn.serving.config import (
        read_batching_parameters,
        read_model_server_config,
        single_model_config,
    )

    if args.tensorflow_intra_op_parallelism < 0 or args.tensorflow_inter_op_parallelism < 0:
        raise CLIError("--tensorflow_intra_op_parallelism/--tensorflow_inter_op_parallelism must be >= 0")
    if args.grpc_max_threads < 1:
        raise CLIError("--grpc_max_threads must be >= 1")
    import tensorflow as tf

    # Must happen before TensorFlow runs its first op (as TF Serving does at startup).
    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    if args.model_config_file:
        config = read_model_server_config(args.model_config_file)
    elif args.model_base_path:
        config = single_model_config(args.model_name, os.path.abspath(args.model_base_path))
    else:
        raise CLIError("give --model_base_path (with --model_name) or --model_config_file")
    batching = None
    if args.enable_batching:
        from tfrec_attn.serving.config import BatchingOptions

        batching = read_batching_parameters(args.batching_parameters_file) \
            if args.batching_parameters_file else BatchingOptions()
    from tfrec_attn.serving import RequestLimits, RestOptions

    try:
        limits = RequestLimits(args.max_batch_rows, args.max_history_length)
        rest_options = RestOptions(max_body_bytes=args.rest_max_body_bytes)
    except ValueError as error:  # name the flag, not the dataclass field
        message = str(error).replace("RequestLimits.", "--").replace("RestOptions.max_body_bytes", "--rest_max_body_bytes")
        raise CLIError(message) from None
    return serve(config, args.port, host=args.host, poll_wait_seconds=args.file_system_poll_wait_seconds,
                 batching=batching, rest_port=args.rest_api_port, max_workers=args.grpc_max_threads,
                 limits=limits, rest_options=rest_options)
