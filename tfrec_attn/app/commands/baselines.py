"""``tfrec-attn baselines``: MostPop and ALS measured with the full-ranking protocol."""

from __future__ import annotations

import json

from tfrec_attn.app.commands.common import add_data_args, load_data


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("baselines", help="MostPop and ALS with the full-ranking protocol")
    add_data_args(p)
    p.add_argument("--stage", choices=("validation", "test"), default="test")
    p.add_argument("--models", nargs="+", default=["MostPop", "ALS"], choices=("MostPop", "ALS"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from tfrec_attn.baselines import run_baselines
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.evaluation import format_table

    split = leave_one_out(load_data(args).interactions)
    results = run_baselines(split, args.stage, names=args.models)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{args.stage} split, full ranking over {split.num_items} items, "
              f"{len(split.evaluated)} users (history excluded, ties credited at expectation)")
        print(format_table(results))
        print("\nsampled (target vs 100 never-interacted negatives)")
        print(format_table(results, ("sampled_HR@10", "sampled_NDCG@10")))
    return 0
