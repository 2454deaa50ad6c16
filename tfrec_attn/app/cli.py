"""``tfrec-attn``: the command line. Each command is a thin call into the library."""

from __future__ import annotations

import argparse
import logging
import sys

import tfrec_attn  # (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)
from tfrec_attn.app.commands import COMMANDS
from tfrec_attn.app.commands.common import CLIError, check_paths
from tfrec_attn.errors import TfrecAttnError

__all__ = ["CLIError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (:mod:`tfrec_attn.app.commands`, one module each)."""
    parser = argparse.ArgumentParser(prog="tfrec-attn", description=__doc__)
    parser.add_argument("--version", action="version", version=tfrec_attn.__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """The ``tfrec-attn`` entry point: every command goes through here, and every
    :class:`~tfrec_attn.errors.TfrecAttnError` ends as one ``error: ...`` line on stderr and
    exit code 2 (a :class:`~tfrec_attn.serving.client.ServingError` prefixed with the server's
    address); Ctrl-C is exit code 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `train --workers` relaunches the same command line
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "dataset"):
        args.dataset = "ml-100k"
    try:
        check_paths(args)
        return args.func(args)
    except TfrecAttnError as error:
        print(f"error: {_server_prefix(args, error)}{error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _server_prefix(args, error: TfrecAttnError) -> str:
    """``"HOST:PORT: "`` for an error talking to ``--server``, else ``""``."""
    server = getattr(args, "server", None)
    if not server:
        return ""
    from tfrec_attn.serving.client import ServingError

    return f"{server}: " if isinstance(error, ServingError) else ""


if __name__ == "__main__":
    sys.exit(main())
