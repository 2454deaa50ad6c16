"""``tfrec-attn train CONFIG``: train the config's recipe (retrieval, ranking or rating),
evaluate on the test split, export; ``--workers``/``--ps`` run it as a local cluster."""

from __future__ import annotations

import sys

from tfrec_attn.app.commands.common import (
    CLIError,
    add_data_args,
    add_keras_verbose_arg,
    keras_verbose,
    load_data,
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model (the config's recipe: retrieval, ranking or "
                                            "rating), evaluate, export")
    p.add_argument("config", help="YAML config, e.g. training/configs/ml100k_retrieval.yaml or ml100k_ranking.yaml")
    p.add_argument("--output-dir", required=True, help="run directory (resumes if interrupted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.dropout=0.3 (repeatable)")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--workers", type=int, default=0,
                   help="run N local worker processes (MultiWorkerMirroredStrategy, or the "
                        "parameter-server workers with --ps) on 127.0.0.1")
    p.add_argument("--ps", type=int, default=0,
                   help="with --workers: M local parameter servers and a chief (ParameterServerStrategy)")
    add_keras_verbose_arg(p)
    add_data_args(p)
    p.set_defaults(func=run, dataset=None)


def run(args) -> int:
    from tfrec_attn.config import load_config

    config = load_config(args.config, args.set)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    from tfrec_attn.training import recipe_class

    recipe_class(config.recipe, config.origin("recipe"))  # a config `tfrec-attn train` cannot train: say so now
    if args.workers or args.ps:
        return _launch_cluster(args, config)
    from tfrec_attn.training import distribute
    from tfrec_attn.training.cluster import is_chief, parse_tf_config

    distributed = config.train.strategy in ("multi_worker_mirrored", "parameter_server")
    tf_config = parse_tf_config() if distributed else None
    if config.train.strategy == "parameter_server" and tf_config and tf_config["task"]["type"] in ("ps", "worker"):
        return distribute.run_server(tf_config)  # serves the chief until it is stopped
    if args.dataset is None:
        args.dataset = config.data.dataset
    from tfrec_attn.training import train

    result = train(config, load_data(args), args.output_dir, verbose=keras_verbose(args))
    if not is_chief(tf_config):
        return 0
    print(result.recipe.summary(result.metrics))
    if not args.no_export:
        for path in result.export():
            print(f"exported {path}")
    return 0


def _launch_cluster(args, config) -> int:
    """``--workers N [--ps M]``: the same command as N local worker processes (+ a chief and M
    parameter servers) on 127.0.0.1, each with its TF_CONFIG; one dying stops them all."""
    from tfrec_attn.training.cluster import launch_local

    if args.workers < 1:
        raise CLIError("--workers must be >= 1 (with --ps, the workers that run the steps)")
    strategy = "parameter_server" if args.ps else "multi_worker_mirrored"
    argv = list(args.argv)
    for flag in ("--workers", "--ps"):  # the tasks themselves run a plain `train`
        while flag in argv:
            at = argv.index(flag)
            del argv[at: at + 2]
        argv = [a for a in argv if not a.startswith(flag + "=")]
    command = [sys.executable, "-m", "tfrec_attn.app.cli", *argv, "--set", f"train.strategy={strategy}"]
    print(f"launching {args.workers} worker(s)" + (f", a chief and {args.ps} parameter server(s)" if args.ps else "")
          + f" on 127.0.0.1 ({strategy})", flush=True)
    return launch_local(command, args.workers, num_ps=args.ps, chief=bool(args.ps),
                        env={"TFREC_ATTN_LAUNCHED": "1"})
