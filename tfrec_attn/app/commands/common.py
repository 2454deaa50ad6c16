"""What several commands share: the data arguments and loading, titles for display, the
metrics table, and the output-path checks :func:`tfrec_attn.app.cli.main` runs first."""

from __future__ import annotations

import argparse
import os
import sys

from tfrec_attn.errors import TfrecAttnError


class CLIError(TfrecAttnError):
    """An error whose message is the whole story (printed without a traceback)."""


def releases() -> list[str]:
    """The MovieLens releases ``--dataset`` accepts."""
    from tfrec_attn.data.movielens import RELEASES

    return sorted(RELEASES)


def add_keras_verbose_arg(parser: argparse.ArgumentParser) -> None:
    """``--keras-verbose``: Keras' progress output while training; by default a progress bar
    on a terminal and one line per epoch otherwise (a log file, a pipe: what Keras' own
    ``verbose="auto"`` does for non-interactive output)."""
    parser.add_argument("--keras-verbose", type=int, default=None, choices=(0, 1, 2),
                        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a terminal, else 2)")


def keras_verbose(args) -> int:
    """The ``--keras-verbose`` level, its default resolved for where stdout goes."""
    if args.keras_verbose is not None:
        return args.keras_verbose
    return 1 if sys.stdout.isatty() else 2


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """The ``data`` argument group: MovieLens (``--data``/``--dataset``) or a generic CSV."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="MovieLens directory (default: $TFREC_ATTN_DATA, the cache, "
                                      "or a download from GroupLens)")
    group.add_argument("--dataset", default=argparse.SUPPRESS, choices=releases(),
                       help="MovieLens release to find or download")
    group.add_argument("--interactions", help="generic CSV with user_id,item_id,timestamp[,rating] "
                                              "(instead of MovieLens)")
    group.add_argument("--items", help="items CSV with item_id,title[,text][,genres] for --interactions")
    group.add_argument("--on-bad-line", choices=("error", "skip"), default="error",
                       help="stop at the first malformed line (default) or skip and count them")
    group.add_argument("--no-download", action="store_true", help="never download data")


def load_data(args):
    """The data set the :func:`add_data_args` flags name; skipped lines and quality notes
    become ``warning:`` lines on stderr."""
    from tfrec_attn.data import load_dataset

    dataset = load_dataset(args.data, dataset=args.dataset, interactions=args.interactions,
                           items=args.items, on_bad_line=args.on_bad_line,
                           download=not args.no_download)
    if dataset.skipped.count:
        print(f"warning: skipped {dataset.skipped.count} malformed line(s); first: "
              + "; ".join(dataset.skipped.examples[:3]), file=sys.stderr)
    for note in dataset.interactions.quality_notes():
        print(f"warning: {dataset.source or dataset.name}: {note}", file=sys.stderr)
    return dataset


def titles(args) -> dict[str, str]:
    """Item titles for display: ``--items`` alone (a CSV) or MovieLens (``--data``/``--dataset``)."""
    if args.items and not args.interactions:
        from tfrec_attn.data.csv_reader import read_items_csv

        return {item_id: item.title for item_id, item in
                read_items_csv(args.items, on_bad_line=args.on_bad_line).items() if item.title}
    if not (args.data or args.interactions or args.dataset):
        return {}
    args.dataset = args.dataset or "ml-100k"
    return {item_id: item.title for item_id, item in load_data(args).items.items() if item.title}


def print_metrics(title: str, metrics: dict, name: str = "retrieval") -> None:
    """``title``, then ``metrics`` as a one-row table named ``name``."""
    from tfrec_attn.evaluation import format_table

    print(title)
    print(format_table({name: metrics}))


def check_paths(args) -> None:
    """Output locations a command would fail on late, checked before any work."""
    for flag in ("output_dir", "output", "export_dir"):
        path = getattr(args, flag, None)
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise CLIError(f"--{flag.replace('_', '-')} {path}: is a file, not a directory")
    plot = getattr(args, "plot", None)
    if plot and not os.path.isdir(os.path.dirname(os.path.abspath(plot))):
        raise CLIError(f"--plot {plot}: directory {os.path.dirname(os.path.abspath(plot))} does not exist")
