"""``tfrec-attn``: the command line. Each command is a thin call into the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import tfrec_attn  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)


class CLIError(Exception):
    """An error whose message is the whole story (printed without a traceback)."""


def _releases() -> list[str]:
    from tfrec_attn.data.movielens import RELEASES

    return sorted(RELEASES)


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="MovieLens directory (default: $TFREC_ATTN_DATA, the cache, "
                                      "or a download from GroupLens)")
    group.add_argument("--dataset", default=argparse.SUPPRESS, choices=_releases(),
                       help="MovieLens release to find or download")
    group.add_argument("--interactions", help="generic CSV with user_id,item_id,timestamp[,rating] "
                                              "(instead of MovieLens)")
    group.add_argument("--items", help="items CSV with item_id,title[,text][,genres] for --interactions")
    group.add_argument("--on-bad-line", choices=("error", "skip"), default="error",
                       help="stop at the first malformed line (default) or skip and count them")
    group.add_argument("--no-download", action="store_true", help="never download data")


def load_data(args):
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


def cmd_data_download(args) -> int:
    from tfrec_attn.data import download_movielens

    path = download_movielens(args.dataset, args.cache_dir, url=args.url)
    print(path)
    return 0


def cmd_data_stats(args) -> int:
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.stats import describe, format_stats, plot_lengths

    dataset = load_data(args)
    split = leave_one_out(dataset.interactions)
    stats = describe(dataset, split)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    if args.plot:
        plot_lengths(split, args.plot, title=f"{dataset.name}: interactions per user")
        print(f"histogram written to {args.plot}", file=sys.stderr)
    return 0


def cmd_data_prepare(args) -> int:
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


def cmd_baselines(args) -> int:
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


def _print_metrics(title: str, metrics: dict, name: str = "retrieval") -> None:
    from tfrec_attn.evaluation import format_table

    print(title)
    print(format_table({name: metrics}))


def cmd_train(args) -> int:
    from tfrec_attn.training.config import load_config

    config = load_config(args.config, args.set)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
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
    dataset = load_data(args)
    if config.recipe == "ranking":
        return _train_ranking(args, config, dataset, is_chief(tf_config))
    from tfrec_attn.training.retrieval import train_retrieval

    result = train_retrieval(config, dataset, args.output_dir, verbose=args.keras_verbose)
    if not is_chief(tf_config):
        return 0
    m = result.metrics
    print(f"trained {m['epochs']} epochs in {m['train_seconds']:.0f}s "
          f"({m['sequences_per_second']:.0f} sequences/s); best validation NDCG@10 "
          f"{m['validation'].get('val_ndcg10', float('nan')):.4f} at epoch {m['best_epoch']}")
    _print_metrics("test split, full ranking:", m["test"])
    if not args.no_export:
        from tfrec_attn.export import export_retrieval

        path = export_retrieval(result.model, result.vocabulary,
                                os.path.join(args.output_dir, "export"),
                                model_name=config.export.model_name, k=config.export.k,
                                index=config.export.index)
        print(f"exported {path}")
    return 0


def _train_ranking(args, config, dataset, chief: bool) -> int:
    from tfrec_attn.evaluation import format_table
    from tfrec_attn.training.ranking import comparison_rows, train_ranking

    result = train_ranking(config, dataset, args.output_dir, verbose=args.keras_verbose)
    if not chief:
        return 0
    m, test = result.metrics, result.metrics["test"]
    print(f"trained {m['epochs']} epochs in {m['train_seconds']:.0f}s; selected epoch {m['best_epoch']} "
          f"({result.recipe.selection_metric} {m['validation'].get(result.recipe.selection_metric, float('nan')):.4f})")
    rows = comparison_rows(test)
    if rows:
        k = config.retrieval.candidates
        print(f"test split, full ranking (two-stage = retrieval top-{k} re-ranked; "
              f"retrieval weight {test.get('retrieval_weight', 0):g}, candidate recall {test.get(f'recall@{k}', 0):.3f}):")
        print(format_table(rows))
    extra = ", ".join(f"{name} {test[name]:.4f}" for name in ("AUC", "RMSE", "MAE") if name in test)
    if extra:
        print(f"test target vs 100 sampled negatives and rating: {extra}")
    if not args.no_export:
        export_dir = os.path.join(args.output_dir, "export")
        print(f"exported {result.recipe.export(result.model, export_dir)}")
        if result.recipe.retrieval is not None:
            print(f"exported {result.recipe.export_recommend(result.model, export_dir)}")
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


def cmd_evaluate(args) -> int:
    from tfrec_attn.data import leave_one_out

    path = args.path
    is_run = os.path.isfile(os.path.join(path, "config.yaml"))
    if is_run:
        from tfrec_attn.evaluation import Evaluator
        from tfrec_attn.training.retrieval import catalogue_scorer, load_run

        config, vocabulary, model = load_run(path)
        if args.dataset is None:
            args.dataset = config.data.dataset
        dataset = load_data(args)
        split = leave_one_out(dataset.interactions, config.data.min_interactions)
        known = vocabulary.is_item(vocabulary.model_indices(split.item_vocab))

        def evaluate():
            features = texts = None
            if getattr(model.item_tower, "text_dim", 0):  # unknown items are scored from their text
                from tfrec_attn.training.retrieval import catalogue_text_features, catalogue_texts

                texts = catalogue_texts(config, dataset, split)
                features = catalogue_text_features(config, dataset, split)
            scorer = catalogue_scorer(model, vocabulary, split, item_features=features, item_texts=texts)
            return Evaluator(split, args.stage).evaluate(scorer)

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
        path, loaded = load_saved_model(path)
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
            reads_text = is_run and getattr(model.item_tower, "text_dim", 0)
            consequence = ("its text tower scores them from their text alone" if reads_text else
                           "the model cannot recommend an item it does not know, so those targets score "
                           "(almost) nothing")
            print(f"warning: {path}: {coverage.describe()}; {consequence}", file=sys.stderr)
    metrics = evaluate()
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_metrics(f"{args.stage} split, full ranking, {source}:", metrics)
    return 0


def _run_recipe(run_dir: str) -> str:
    """The ``recipe`` of a run directory's saved config (retrieval when absent or unreadable)."""
    import yaml

    try:
        with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as handle:
            return (yaml.safe_load(handle) or {}).get("recipe", "retrieval")
    except (OSError, yaml.YAMLError, AttributeError):
        return "retrieval"


def cmd_export(args) -> int:
    from tfrec_attn.export import export_retrieval
    from tfrec_attn.training.retrieval import load_run

    if _run_recipe(args.run_dir) == "ranking":
        from tfrec_attn.training.ranking import export_ranking_run

        for path in export_ranking_run(args.run_dir, args.export_dir or os.path.join(args.run_dir, "export"),
                                       args.version):
            print(path)
        return 0
    config, vocabulary, model = load_run(args.run_dir)
    path = export_retrieval(model, vocabulary, args.export_dir or os.path.join(args.run_dir, "export"),
                            model_name=args.model_name or config.export.model_name,
                            k=args.k or config.export.k, index=args.index or config.export.index,
                            version=args.version)
    print(path)
    return 0


def cmd_index_add_items(args) -> int:
    import time

    from tfrec_attn.data.csv_reader import read_items_csv
    from tfrec_attn.export.catalogue import add_items

    start = time.perf_counter()
    items = read_items_csv(args.items)
    path = add_items(args.export_base, items, model_name=args.model_name)
    print(f"{path}: {len(items)} new items indexed in {time.perf_counter() - start:.1f} s "
          "(a running server picks the version up when it polls)")
    return 0


def cmd_serve(args) -> int:
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


def cmd_query(args) -> int:
    from tfrec_attn.serving.client import RecommenderClient, ServingError

    if args.k < 1:
        raise CLIError(f"-k {args.k}: must be >= 1")
    history = [h.strip() for h in args.history.split(",") if h.strip()] if args.history else []
    with RecommenderClient(args.server, model_name=args.model_name, timeout=args.timeout) as client:
        if args.metadata:
            print(json.dumps(client.metadata(), indent=2))
            return 0
        ranked = client.recommend(history, k=args.k)
        for rank, (item, score) in enumerate(ranked, start=1):
            print(f"{rank:>3}  {item:<12} {score:9.4f}")
        notes = []
        if len(ranked) < args.k:
            # The export's K is the static width of serving_default's outputs.
            try:
                shape = client.metadata()["signatures"]["serving_default"]["outputs"]["item_ids"]["shape"]
                export_k = shape[1] if len(shape) == 2 and shape[1] > 0 else None
            except (ServingError, KeyError):
                export_k = None
            if export_k is not None and args.k > export_k:
                notes.append(f"-k {args.k}: the model returns at most {export_k} items (the export's K), so "
                             f"{len(ranked)} are listed; for more, export with a larger K: `tfrec-attn export "
                             f"RUN_DIR --k {args.k}` or train with --set export.k={args.k}")
            else:
                notes.append(f"-k {args.k}: the model returned {len(ranked)} items (it never returns the "
                             "history's items, nor more items than its catalogue holds)")
        # Which history ids does the model know? The `rank` signature scores unknown ids -inf.
        unknown = []
        if history:
            try:
                unknown = [item for item, score in client.rank(history, history) if score == float("-inf")]
            except ServingError as error:
                notes.append(f"could not check the history ids against the model ({error})")
        zeros = bool(ranked) and all(score == 0.0 for _, score in ranked)
        answer = ("every item scores 0 (the user vector is zero), so the list is the first items of the "
                  "model's vocabulary in its order, not a recommendation" if zeros else
                  "the scores are the model's per-item bias alone (model.item_bias), nothing about this user")
        if history and unknown and len(set(unknown)) == len(set(history)):
            notes.append(f"none of the history ids ({', '.join(dict.fromkeys(unknown))}) is known to the model, "
                         f"so this is its answer for an empty history: {answer}")
        elif unknown:
            notes.append(f"{len(set(unknown))} of {len(set(history))} history ids are unknown to the model and were "
                         f"ignored: {', '.join(dict.fromkeys(unknown))}")
        elif not history:
            notes.append(f"no --history: this is the model's answer for an empty history: {answer}")
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    return 0


def _titles(args) -> dict[str, str]:
    """Item titles for display: ``--items`` alone (a CSV) or MovieLens (``--data``/``--dataset``)."""
    if args.items and not args.interactions:
        from tfrec_attn.data.csv_reader import read_items_csv

        return {item_id: item.title for item_id, item in
                read_items_csv(args.items, on_bad_line=args.on_bad_line).items() if item.title}
    if not (args.data or args.interactions or args.dataset):
        return {}
    args.dataset = args.dataset or "ml-100k"
    return {item_id: item.title for item_id, item in load_data(args).items.items() if item.title}


def cmd_explain(args) -> int:
    from tfrec_attn.app.explain import RankingExplainer

    history = [i.strip() for value in args.history for i in value.split(",") if i.strip()]
    candidates = [i.strip() for value in args.candidates for i in value.split(",") if i.strip()]
    if not candidates:
        raise CLIError("--candidates: no item ids given; list at least one candidate to score")
    if args.top is not None and args.top < 1:
        raise CLIError(f"--top {args.top}: must be >= 1")
    if args.heatmap and not os.path.isdir(os.path.dirname(os.path.abspath(args.heatmap))):
        raise CLIError(f"--heatmap {args.heatmap}: directory {os.path.dirname(os.path.abspath(args.heatmap))} "
                       "does not exist")
    try:
        explainer = RankingExplainer(args.model_path)
    except FileNotFoundError as error:
        raise CLIError(f"{error}; give a ranking export (BASE/ranking or one of its version directories)") from None
    result = explainer.explain(history, candidates, titles=_titles(args))
    if args.json:
        print(json.dumps(result.to_dict(top=args.top), indent=2))
    else:
        print(result.table(top=args.top))
    if args.heatmap:
        result.heatmap(args.heatmap)
        print(f"heatmap written to {args.heatmap}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_run(args) -> int:
    from tfrec_attn.app.stages import load_pipeline_config, run_pipeline

    config = load_pipeline_config(args.config, args.set, quick=args.quick)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if args.dataset is None:
        args.dataset = config.retrieval.data.dataset
    print(f"tfrec-attn run: output in {os.path.abspath(args.output_dir)}", flush=True)
    dataset = load_data(args)
    run_pipeline(dataset, args.output_dir, config, quick=args.quick, verbose=args.keras_verbose)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfrec-attn", description=__doc__)
    parser.add_argument("--version", action="version", version=tfrec_attn.__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="download or describe data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("download", help="download a MovieLens release (checksum-verified)")
    p.add_argument("--dataset", default="ml-100k", choices=_releases())
    p.add_argument("--cache-dir", default=None, help="default: $TFREC_ATTN_CACHE or ~/.cache/tfrec_attn")
    p.add_argument("--url", default=None, help="mirror URL of the archive (checksum still enforced)")
    p.set_defaults(func=cmd_data_download)
    p = data_sub.add_parser("stats", help="users/items/interactions/sparsity/length histogram")
    _add_data_args(p)
    p.add_argument("--plot", help="write the sequence-length histogram to this PNG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_stats)
    p = data_sub.add_parser("prepare", help="write the training sequences as sharded TFRecord files")
    _add_data_args(p)
    p.add_argument("--output", required=True,
                   help="directory: OUTPUT/train (selection) and OUTPUT/train_validation (refit), each "
                        "with its shards, vocabulary and manifest")
    p.add_argument("--shards", type=int, default=8,
                   help="number of files (at least the number of input pipelines; default 8)")
    p.add_argument("--min-interactions", type=int, default=3,
                   help="as data.min_interactions of the training config (default 3)")
    p.set_defaults(func=cmd_data_prepare)

    p = sub.add_parser("baselines", help="MostPop and ALS with the full-ranking protocol")
    _add_data_args(p)
    p.add_argument("--stage", choices=("validation", "test"), default="test")
    p.add_argument("--models", nargs="+", default=["MostPop", "ALS"], choices=("MostPop", "ALS"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_baselines)

    p = sub.add_parser("train", help="train a model (the config's recipe: retrieval or ranking), evaluate, export")
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
    p.add_argument("--keras-verbose", type=int, default=1, choices=(0, 1, 2))
    _add_data_args(p)
    p.set_defaults(func=cmd_train, dataset=None)

    p = sub.add_parser("evaluate", help="full-ranking metrics of a run dir or an exported SavedModel")
    p.add_argument("path", help="run directory, SavedModel directory, or TF Serving model directory")
    p.add_argument("--stage", choices=("validation", "test"), default="test")
    p.add_argument("--json", action="store_true")
    _add_data_args(p)
    p.set_defaults(func=cmd_evaluate, dataset=None)

    p = sub.add_parser("export", help="export a run as a versioned SavedModel (a ranking run: ranking + recommend)")
    p.add_argument("run_dir")
    p.add_argument("--export-dir", help="MODEL_BASE_PATH (default: RUN_DIR/export)")
    p.add_argument("--model-name")
    p.add_argument("--version", type=int, help="default: next integer version")
    p.add_argument("--k", type=int)
    p.add_argument("--index", choices=("brute_force", "scann"))
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="the main job: train -> evaluate -> export -> serve -> query -> report")
    p.add_argument("--output-dir", default="runs/main")
    p.add_argument("--config", help="pipeline YAML (default training/configs/ml100k_pipeline.yaml)")
    p.add_argument("--quick", action="store_true", help="smoke profile: user subset, short training")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set retrieval.train.time_budget_seconds=120")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--keras-verbose", type=int, default=1, choices=(0, 1, 2))
    _add_data_args(p)
    p.set_defaults(func=cmd_run, dataset=None)

    index = sub.add_parser("index", help="change an exported model's item index without retraining")
    index_sub = index.add_subparsers(dest="index_command", required=True)
    p = index_sub.add_parser("add-items", help="publish the next version of an export with new items, embedded "
                                               "from their text (cold start; text/hybrid item towers)")
    p.add_argument("export_base", help="the export base path, e.g. runs/main/export")
    p.add_argument("--items", required=True,
                   help="CSV with item_id,title[,text][,genres] (header required); ids must be new")
    p.add_argument("--model-name", default="retrieval", help="model directory under EXPORT_BASE (default retrieval)")
    p.set_defaults(func=cmd_index_add_items)

    p = sub.add_parser("serve", help="TF-Serving-compatible gRPC model server (flags as in TF Serving)")
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
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("query", help="ask a running server for recommendations")
    p.add_argument("--server", default="127.0.0.1:8500")
    p.add_argument("--model_name", default="retrieval")
    p.add_argument("--history", help="comma-separated item ids, oldest first")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--metadata", action="store_true", help="print the model's signatures instead")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("explain", help="score candidates with a ranking export and show each one's attention over "
                                       "the history",
                       description="Scores CANDIDATES after HISTORY with a ranking export (serving_default) and "
                                   "lists, for each candidate, the history items by |attention weight| (the "
                                   "export's `explain` signature; DIN weights may be negative). Titles come from "
                                   "--items ITEMS_CSV alone, or from MovieLens (--data DIR or --dataset); "
                                   "otherwise ids are shown.")
    p.add_argument("model_path", help="ranking export: BASE/ranking (newest version), a version directory, or BASE")
    p.add_argument("--history", nargs="+", default=[], metavar="ID",
                   help="history item ids, oldest first (space- or comma-separated)")
    p.add_argument("--candidates", nargs="+", required=True, metavar="ID",
                   help="item ids to score and explain (space- or comma-separated)")
    p.add_argument("--top", type=int, default=5, help="history items listed per candidate (default 5)")
    p.add_argument("--heatmap", metavar="PNG", help="also write candidates x history items as a heatmap")
    p.add_argument("--json", action="store_true")
    _add_data_args(p)
    p.set_defaults(func=cmd_explain, dataset=None)
    return parser


def known_errors() -> tuple:
    """The project's own error types: their message is the whole story (no traceback)."""
    from tfrec_attn.app.explain import ExplainError
    from tfrec_attn.data.errors import (
        ChecksumError,
        DataFileError,
        DataFormatError,
        DataNotFoundError,
    )
    from tfrec_attn.export.catalogue import AddItemsError
    from tfrec_attn.serving.client import ServingError
    from tfrec_attn.text.pretrained import PretrainedModelError
    from tfrec_attn.training.cluster import ClusterError
    from tfrec_attn.training.config import ConfigError

    return (CLIError, ConfigError, ClusterError, DataFormatError, DataFileError, DataNotFoundError,
            ChecksumError, ServingError, AddItemsError, PretrainedModelError, ExplainError)


def _check_paths(args) -> None:
    """Output locations a command would fail on late, checked before any work."""
    for flag in ("output_dir", "output", "export_dir"):
        path = getattr(args, flag, None)
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise CLIError(f"--{flag.replace('_', '-')} {path}: is a file, not a directory")
    plot = getattr(args, "plot", None)
    if plot and not os.path.isdir(os.path.dirname(os.path.abspath(plot))):
        raise CLIError(f"--plot {plot}: directory {os.path.dirname(os.path.abspath(plot))} does not exist")


def main(argv=None) -> int:
    """The ``tfrec-attn`` entry point: every command goes through here, and every error of
    the project's own types ends as one ``error: ...`` line on stderr and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "dataset"):
        args.dataset = "ml-100k"
    known = known_errors()
    try:
        _check_paths(args)
        return args.func(args)
    except known as error:
        where = getattr(args, "server", None) if type(error).__name__ == "ServingError" else None
        print(f"error: {where + ': ' if where else ''}{error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
