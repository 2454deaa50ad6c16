"""``tfrec-attn data download|stats|prepare``: fetch, describe or shard the data."""

from __future__ import annotations

import json
import os
import sys

from tfrec_attn.app.commands.common import CLIError, add_data_args, load_data, releases


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="download or describe data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("download", help="download a MovieLens release (checksum-verified)")
    p.add_argument("--dataset", default="ml-100k", choices=releases())
    p.add_argument("--cache-dir", default=None, help="default: $TFREC_ATTN_CACHE or ~/.cache/tfrec_attn")
    p.add_argument("--url", default=None, help="mirror URL of the archive (checksum still enforced)")
    p.set_defaults(func=download)
    p = data_sub.add_parser("stats", help="users/items/interactions/sparsity/length histogram")
    add_data_args(p)
    p.add_argument("--plot", help="write the sequence-length histogram to this PNG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=stats)
    p = data_sub.add_parser("prepare", help="write the training sequences as sharded TFRecord files")
    add_data_args(p)
    p.add_argument("--output", required=True,
                   help="directory: OUTPUT/train (selection) and OUTPUT/train_validation (refit), each "
                        "with its shards, vocabulary and manifest")
    p.add_argument("--shards", type=int, default=8,
                   help="number of files (at least the number of input pipelines; default 8)")
    p.add_argument("--min-interactions", type=int, default=3,
                   help="as data.min_interactions of the training config (default 3)")
    p.set_defaults(func=prepare)


def download(args) -> int:
    from tfrec_attn.data import download_movielens

    path = download_movielens(args.dataset, args.cache_dir, url=args.url)
    print(path)
    return 0


def stats(args) -> int:
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.stats import describe, format_stats, plot_lengths

    dataset = load_data(args)
    split = leave_one_out(dataset.interactions)
    summary = describe(dataset, split)
    print(json.dumps(summary, indent=2) if args.json else format_stats(summary))
    if args.plot:
        plot_lengths(split, args.plot, title=f"{dataset.name}: interactions per user")
        print(f"histogram written to {args.plot}", file=sys.stderr)
    return 0


def prepare(args) -> int:
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.tfrecord import write_sequence_files
    from tfrec_attn.training.retrieval import sequence_files_dir

    if args.shards < 1:
        raise CLIError("--shards must be >= 1")
    split = leave_one_out(load_data(args).interactions, args.min_interactions)
    for include_validation in (False, True):  # the selection run's data, then the refit's
        target = sequence_files_dir(args.output, include_validation)
        manifest = write_sequence_files(split, target, num_shards=args.shards,
                                        include_validation=include_validation)
        part = "train + validation" if include_validation else "train"
        print(f"wrote {manifest['num_users']:,} users, {manifest['num_interactions']:,} {part} interactions "
              f"in {manifest['num_shards']} shards to {os.path.abspath(target)}")
    print(f"train from them with --set data.sequence_files={args.output}")
    return 0
