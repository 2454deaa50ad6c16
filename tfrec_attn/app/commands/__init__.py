"""The ``tfrec-attn`` commands, one module each: ``add_parser(subparsers)`` registers the
command's flags (``set_defaults(func=...)``) and the function it names runs it
(``args -> exit code``). :mod:`tfrec_attn.app.cli` assembles them, in :data:`COMMANDS`' order."""

from tfrec_attn.app.commands import (
    baselines,
    data,
    evaluate,
    explain,
    export,
    index,
    interests,
    query,
    run,
    serve,
    train,
)

COMMANDS = (data, baselines, train, evaluate, export, run, index, serve, query, explain, interests)

__all__ = ["COMMANDS"]
