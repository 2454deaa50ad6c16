"""``tfrec-attn evaluate PATH``: full-ranking metrics of a retrieval run directory (its
in-memory model) or of a retrieval export (through ``serving_default``)."""

from __future__ import annotations

import json
import os
import sys

from tfrec_attn.app.commands.common import CLIError, add_data_args, load_data, print_metrics


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="full-ranking metrics of a run dir or an exported SavedModel")
    p.add_argument("path", help="run directory, SavedModel directory, or TF Serving model directory")
    p.add_argument("--stage", choices=("validation", "test"), default="test")
    p.add_argument("--json", action="store_true")
    add_data_args(p)
    p.set_defaults(func=run, dataset=None)


def run(args) -> int:
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.training import RunDirectory

    path = args.path
    run_dir = RunDirectory(path)
    is_run = os.path.isfile(run_dir.config_file)
    if is_run:
        from tfrec_attn.evaluation import Evaluator

        recipe_name = run_dir.recipe_name()
        if recipe_name != "retrieval":
            raise CLIError(f"{path}: a {recipe_name} run; this command evaluates retrieval runs and exports (full "
                           f"ranking of the catalogue). Its test metrics are in {run_dir.metrics_file}; a ranking "
                           "run's two stages are evaluated through its recommend export (RUN/export/recommend)")
        config = run_dir.load_config()
        if args.dataset is None:
            args.dataset = config.data.dataset
        dataset = load_data(args)
        split = leave_one_out(dataset.interactions, config.data.min_interactions)
        loaded = run_dir.load(dataset, split)  # unknown items: a text tower scores them from their text
        model, vocabulary = loaded.model, loaded.vocabulary
        known = vocabulary.is_item(vocabulary.model_indices(split.item_vocab))

        def evaluate():
            return Evaluator(split, args.stage).evaluate(loaded.recipe.retriever(model).scorer(split))

        source = f"run {path} (in-memory model)"
    else:
        from tfrec_attn.evaluation.saved_model import (
            evaluate_saved_model,
            known_items,
            load_saved_model,
            resolve_saved_model,
        )

        try:
            path = resolve_saved_model(path)
        except FileNotFoundError as error:
            raise CLIError(f"{error}; give a run directory (with config.yaml) or an export") from None
        args.dataset = args.dataset or "ml-100k"
        dataset = load_data(args)
        split = leave_one_out(dataset.interactions)
        path, loaded = load_saved_model(path)  # ExportKindError: not a retrieval export
        known = known_items(loaded, split.item_vocab)  # None: no `rank` signature to ask

        def evaluate():
            return evaluate_saved_model(path, split, args.stage, loaded=loaded)

        source = f"SavedModel {path} through serving_default"
    if known is not None:
        from tfrec_attn.evaluation.saved_model import vocabulary_coverage

        coverage = vocabulary_coverage(known, split, args.stage)
        data = args.interactions or dataset.source or dataset.name
        if coverage.mismatch:
            raise CLIError(f"{path}: {coverage.describe()}. The data ({data}) probably does not match "
                           "the model: evaluate it on the data it was trained on")
        if coverage.unknown_targets or coverage.unknown_histories:
            reads_text = is_run and model.item_tower.reads_text
            consequence = ("its text tower scores them from their text alone" if reads_text else
                           "the model cannot recommend an item it does not know, so those targets score "
                           "(almost) nothing")
            print(f"warning: {path}: {coverage.describe()}; {consequence}", file=sys.stderr)
    metrics = evaluate()
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print_metrics(f"{args.stage} split, full ranking, {source}:", metrics)
    return 0
