"""``tfrec-attn export RUN_DIR``: a finished run as versioned SavedModels (a retrieval run:
``retrieval``; a ranking run: ``ranking`` and ``recommend``; a rating run: ``rating``),
through the run's own recipe (:meth:`tfrec_attn.training.RunDirectory.export`)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a run as a versioned SavedModel (a ranking run: ranking + "
                                             "recommend)")
    p.add_argument("run_dir")
    p.add_argument("--export-dir", help="MODEL_BASE_PATH (default: RUN_DIR/export)")
    p.add_argument("--model-name")
    p.add_argument("--version", type=int, help="default: next integer version")
    p.add_argument("--k", type=int)
    p.add_argument("--index", choices=("brute_force", "scann"))
    p.set_defaults(func=run)


def run(args) -> int:
    from tfrec_attn.training import RunDirectory

    options = {"version": args.version, "model_name": args.model_name, "k": args.k, "index": args.index}
    for path in RunDirectory(args.run_dir).export(args.export_dir, **options):
        print(path)
    return 0
