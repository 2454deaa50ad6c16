"""``tfrec-attn run``: the main job (:mod:`tfrec_attn.app.stages`), from data to report."""

from __future__ import annotations

import os

from tfrec_attn.app.commands.common import (
    add_data_args,
    add_keras_verbose_arg,
    keras_verbose,
    load_data,
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="the main job: train -> evaluate -> export -> serve -> query -> report")
    p.add_argument("--output-dir", default="runs/main")
    p.add_argument("--config", help="pipeline YAML (default training/configs/ml100k_pipeline.yaml)")
    p.add_argument("--quick", action="store_true", help="smoke profile: user subset, short training")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set retrieval.train.time_budget_seconds=120")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_keras_verbose_arg(p)
    add_data_args(p)
    p.set_defaults(func=run, dataset=None)


def run(args) -> int:
    from tfrec_attn.app.stages import load_pipeline_config, run_pipeline

    config = load_pipeline_config(args.config, args.set, quick=args.quick)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if args.dataset is None:
        args.dataset = config.retrieval.data.dataset
    print(f"tfrec-attn run: output in {os.path.abspath(args.output_dir)}", flush=True)
    dataset = load_data(args)
    run_pipeline(dataset, args.output_dir, config, quick=args.quick, verbose=keras_verbose(args))
    return 0
