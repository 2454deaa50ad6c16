"""``tfrec-attn run``: the whole product on real data, one stage after another.

prepare data -> baselines (MostPop, ALS) -> train retrieval (one model for known and new
items) -> train the attention ranker on the retrieval candidates -> train the rating model
(GLocal-K) on the rating table -> evaluate everything with the full-ranking protocol
(retrieval only and two-stage) and the rating table -> the cold-start protocol's table (the
retrieval config trained again without the cold items) -> export versioned SavedModels
(retrieval, ranking, recommend, rating) -> start the local gRPC server -> query the
``recommend`` model through the client for a few users, and the ``rating`` model for their
recommendations' ratings -> print them with titles, scores, predicted ratings and the history
items that explain them (leave-one-out score drops) -> add a new item to the running
``retrieval`` by its text -> stop the server -> write the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time

import numpy as np

from tfrec_attn.config import PipelineConfig, load_config, save_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "training", "configs", "ml100k_pipeline.yaml")


class Stages:
    """Numbered stage headers with elapsed times (kept for the report)."""

    def __init__(self, total: int, out=sys.stdout):
        self.total = total
        self.out = out
        self.number = 0
        self.start = time.perf_counter()
        self.current = None
        self.times: dict[str, float] = {}

    def __call__(self, title: str):
        self.finish()
        self.number += 1
        self.current = (title, time.perf_counter())
        print(f"\n=== [{self.number}/{self.total}] {title} ===", file=self.out, flush=True)

    def finish(self):
        if self.current:
            title, began = self.current
            self.times[title] = time.perf_counter() - began
            self.current = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def subset_users(dataset, max_users: int, seed: int):
    users = np.unique(dataset.interactions.user_ids)
    if len(users) <= max_users:
        return dataset
    rng = np.random.default_rng(seed)
    return dataset.subset_users(rng.choice(users, size=max_users, replace=False))


def run_pipeline(dataset, output_dir: str, config: PipelineConfig, *, quick: bool = False,
                 verbose: int = 1) -> dict:
    """Runs every stage; returns the summary written to ``OUTPUT/summary.json``."""
    from tfrec_attn.baselines import ALSBaseline, MostPopBaseline
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.stats import describe, format_stats, plot_lengths
    from tfrec_attn.evaluation import Evaluator, format_table

    os.makedirs(output_dir, exist_ok=True)
    retrieval_config = config.retrieval
    cold_stage = config.cold_start.enabled
    two_stage = config.two_stage
    stages = Stages(7 + cold_stage + two_stage + config.rating_model)
    save_config(retrieval_config, os.path.join(output_dir, "retrieval_config.yaml"))
    if two_stage:
        save_config(config.ranking, os.path.join(output_dir, "ranking_config.yaml"))
    with open(os.path.join(output_dir, "pipeline_config.yaml"), "w") as handle:
        handle.write(config.to_yaml())

    # 1. data -------------------------------------------------------------------------
    stages("prepare data")
    if quick:
        dataset = subset_users(dataset, config.quick.max_users, retrieval_config.seed)
    split = leave_one_out(dataset.interactions, retrieval_config.data.min_interactions)
    stats = describe(dataset, split)
    print(format_stats(stats))
    plot_lengths(split, os.path.join(output_dir, "sequence_lengths.png"), f"{dataset.name}: interactions per user")
    evaluator = Evaluator(split, "test")

    # 2. baselines --------------------------------------------------------------------
    stages("baselines (full ranking, test split)")
    results, timings = {}, {}
    for name in config.baselines:
        began = time.perf_counter()
        model = (MostPopBaseline() if name == "MostPop" else ALSBaseline()).fit(split)
        results[name] = evaluator.evaluate(model.score_fn(split))
        timings[name] = time.perf_counter() - began
        print(f"{name}: NDCG@10 {results[name]['NDCG@10']:.4f}  ({timings[name]:.1f}s)", flush=True)

    # 3. retrieval --------------------------------------------------------------------
    stages(f"train retrieval (transformer user tower, {retrieval_config.model.item_tower.type} item tower)")
    from tfrec_attn.training import train

    trained = train(retrieval_config, dataset, os.path.join(output_dir, "retrieval"), verbose=verbose, split=split)
    results["Transformer retrieval"] = trained.metrics["test"]
    timings["Transformer retrieval"] = trained.metrics["train_seconds"]

    # 3b. ranking ---------------------------------------------------------------------
    ranked = None
    ratings, two_stage_rows = {}, {}
    if two_stage:
        from tfrec_attn.evaluation.two_stage import comparison_rows, rating_rows
        from tfrec_attn.training.retrieval import retrievers

        stages(f"train ranking ({config.ranking.model.attention.upper()} target attention) on the retrieval "
               f"top-{config.ranking.retrieval.candidates}")
        # The in-memory retrieval model gives the test candidates, its selection checkpoint the
        # validation candidates and hard negatives (with the catalogue's text features it computed).
        final, selection = retrievers(trained)
        # The ranking run names the retrieval run it re-ranks (its export and the held-out
        # retrieval model read it from there).
        ranking_config = dataclasses.replace(config.ranking, retrieval=dataclasses.replace(
            config.ranking.retrieval, run_dir=os.path.abspath(os.path.join(output_dir, "retrieval"))))
        ranked = train(ranking_config, dataset, os.path.join(output_dir, "ranking"), verbose=verbose, split=split,
                       retrieval=final, selection_retrieval=selection)
        test = ranked.metrics["test"]
        name = f"Two-stage (retrieval + {config.ranking.model.attention.upper()} ranking)"
        results[name] = {k: v for k, v in test.items() if "_" not in k}
        timings[name] = trained.metrics["train_seconds"] + ranked.metrics["train_seconds"]
        ratings, two_stage_rows = rating_rows(test), comparison_rows(test)

    # 3c. rating ----------------------------------------------------------------------
    rating = None
    if config.rating_model:
        stages("train rating (GLocal-K kernel autoencoder) on the rating table")
        rating = train_rating_model(config.rating, dataset, split, os.path.join(output_dir, "rating"), verbose)
        if rating is not None:
            test = rating.metrics["test"]
            ratings["kernel autoencoder (GLocal-K)"] = {"RMSE": test["RMSE"], "MAE": test["MAE"],
                                                        "count": test["count"]}

    # 4. evaluation table -------------------------------------------------------------
    stages("evaluate (test split, full ranking)")
    table = format_table(results)
    print(table)
    if ranked is not None:
        test = ranked.metrics["test"]
        print(f"two-stage: retrieval weight {test['retrieval_weight']:g} (chosen on validation); candidate recall "
              f"{test.get('recall@' + str(config.ranking.retrieval.candidates), float('nan')):.3f}; ranker AUC "
              f"{test.get('AUC', float('nan')):.4f}")
    for row, value in ratings.items():
        print(f"rating, test events: {row:<44} RMSE {value['RMSE']:.4f}  MAE {value['MAE']:.4f}")

    # 4b. cold start: the one model's config trained without the cold items --------------
    cold_start = None
    if cold_stage:
        stages(f"cold start: items known only by their text (the {retrieval_config.model.item_tower.type} item "
               "tower retrained without them, cold-start protocol)")
        from tfrec_attn.app.cold_start import cold_start_table

        budget = config.quick.cold_start_budget_seconds if quick else config.cold_start.time_budget_seconds
        cold_start = cold_start_table(
            dataset, split, retrieval_config, dataclasses.replace(config.cold_start, time_budget_seconds=budget),
            output_dir, verbose=0)

    # 5. export -----------------------------------------------------------------------
    stages("export versioned SavedModels")
    export_base = os.path.join(output_dir, "export")
    # Each stage's recipe exports its models with its config's export settings.
    exports = {"retrieval": trained.export(export_base)}
    if ranked is not None:
        exports["ranking"] = ranked.export(export_base)  # ranking + recommend
    if rating is not None:
        exports["rating"] = rating.export(export_base)
    for paths in exports.values():
        for path in paths:
            print(f"exported {path}")
    exported = exports["retrieval"][0]
    model_name = retrieval_config.export.model_name
    from tfrec_attn.serving.config import write_model_server_config

    # `serve:`, less the stages skipped (and the rating model of data without ratings)
    served_models = [m for m in config.served_models() if m.stage != "rating" or rating is not None]
    served = [model.name for model in served_models]
    rating_name = next((m.name for m in served_models if m.stage == "rating"), None)
    models_config = write_model_server_config(
        os.path.join(export_base, "models.config"),
        [(name, os.path.abspath(os.path.join(export_base, name))) for name in served])

    # 6. serve + query ----------------------------------------------------------------
    stages("serve (local gRPC server) and query through the client")
    from tfrec_attn.serving.client import RecommenderClient
    from tfrec_attn.serving.process import start_server, stop_server

    proc, target = start_server(models_config, 0.5 if cold_stage else 0)
    samples = []
    explained = None
    try:
        print(f"server up at {target} (pid {proc.pid}), serving {', '.join(served)}")
        rng = np.random.default_rng(retrieval_config.seed)
        chosen = rng.choice(split.evaluated, size=min(config.sample_users, len(split.evaluated)), replace=False)
        asked = config.ranking.export.recommend_name if ranked is not None else model_name
        with contextlib.ExitStack() as clients:
            client = clients.enter_context(RecommenderClient(target, model_name=asked))
            # the rating model's ratings of the recommendations (it knows users by id)
            rater = clients.enter_context(RecommenderClient(target, model_name=rating_name)) if rating_name else None
            for user in chosen:
                history = [str(i) for i in split.item_vocab[split.sequences[user][:-1]]]
                if ranked is not None:  # what else the data knows: ratings, times, the user's profile
                    profile = dataset.user(str(split.user_ids[user]))
                    recs = client.recommend(history, k=config.k, ratings=split.ratings[user][:-1],
                                            timestamps=split.timestamps[user][:-1],
                                            user={"age": profile.age, "gender": profile.gender,
                                                  "occupation": profile.occupation, "zip": profile.zip_code})
                else:
                    recs = client.recommend(history, k=config.k)
                rated = rater.ratings(str(split.user_ids[user]), [rec[0] for rec in recs]).ratings \
                    if rater is not None and recs else None
                why = {rec.item_id: rec.because for rec in recs} if ranked is not None \
                    else client.explain(history, [item for item, _ in recs])
                samples.append({
                    "user_id": str(split.user_ids[user]),
                    "history": history,
                    "test_target": str(split.item_vocab[split.sequences[user][-1]]),
                    "test_target_title": dataset.item_title(str(split.item_vocab[split.sequences[user][-1]])),
                    "model": asked,
                    "rating_model": rating_name if rated is not None else (asked if ranked is not None else None),
                    "recommendations": [{"item_id": rec[0], "title": dataset.item_title(rec[0]), "score": rec[1],
                                         "rating": rated[n] if rated is not None else getattr(rec, "rating", None),
                                         "ranker_rating": getattr(rec, "rating", None),
                                         "because": [{"item_id": h, "title": dataset.item_title(h),
                                                      ("drop" if ranked is not None else "weight"): w}
                                                     for h, w in why[rec[0]]]}
                                        for n, rec in enumerate(recs)],
                })
        if ranked is not None and samples:  # the served ranker's target attention (its `explain`, over gRPC)
            recent = samples[0]["history"][-config.ranking.model.max_len:]  # what the ranker reads
            candidates = [r["item_id"] for r in samples[0]["recommendations"]]
            with RecommenderClient(target, model_name=config.ranking.export.model_name) as client:
                explained = client.predict({"history": np.array([recent], object),
                                            "candidates": np.array([candidates], object)}, "explain")
            explained = (explained["attention"][0], candidates, recent)
        if cold_stage and trained.model.item_tower.reads_text:  # the one model takes the new item
            from tfrec_attn.app.cold_start import new_item_demo

            with RecommenderClient(target, model_name=model_name) as client:
                cold_start["new_item"] = new_item_demo(
                    client, export_base, model_name, config.cold_start.new_item, trained, split, dataset,
                    config.k, config.cold_start.users_to_scan, retrieval_config.seed)
        elif cold_stage:
            print(f"note: no new item added: the {retrieval_config.model.item_tower.type} item tower knows items by "
                  "id only (retrieval.model.item_tower.type=ensemble, text or hybrid places them by their text)")
    finally:
        code = stop_server(proc)
    print_samples(samples, dataset)
    print(f"server stopped (exit code {code})")

    # 7. report -----------------------------------------------------------------------
    stages("report")
    from tfrec_attn.app.plots import attention_heatmap, plot_attention
    from tfrec_attn.app.report import write_report

    heatmap = self_attention = None
    if explained is not None:
        weights, candidates, recent = explained
        heatmap = attention_heatmap(
            weights, [dataset.item_title(c) for c in candidates], [dataset.item_title(h) for h in recent],
            os.path.join(output_dir, "target_attention.png"),
            title=f"Ranking model: each candidate's target attention over the history "
                  f"({config.ranking.model.attention.upper()})")
    if samples:
        self_attention = plot_attention(trained.model, trained.vocabulary, samples[0]["history"], dataset,
                                        os.path.join(output_dir, "attention.png"))
    stages.finish()
    summary = {
        "dataset": stats, "quick": quick, "metrics": results, "training_seconds": timings,
        "best_epoch": trained.metrics["best_epoch"], "epochs": trained.metrics["epochs"],
        "export": exported, "samples": samples, "stage_seconds": stages.times,
        "total_seconds": stages.elapsed, "server_exit_code": code, "server_pid": proc.pid,
        "item_tower": retrieval_config.model.item_tower.type, "cold_start": cold_start,
        "rating": None if rating is None else {
            "metrics": rating.metrics["test"], "validation": rating.metrics["validation"],
            "best_epoch": rating.metrics["best_epoch"], "epochs": rating.metrics["epochs"],
            "train_seconds": rating.metrics["train_seconds"], "run_dir": rating.output_dir},
        "two_stage": None if ranked is None else {
            "metrics": ranked.metrics["test"], "validation": ranked.metrics["validation"],
            "best_epoch": ranked.metrics["best_epoch"], "epochs": ranked.metrics["epochs"],
            "train_seconds": ranked.metrics["train_seconds"], "attention": config.ranking.model.attention,
            "candidates": config.ranking.retrieval.candidates, "ratings": ratings, "rows": two_stage_rows},
    }
    with open(os.path.join(output_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    report = write_report(output_dir, summary, curves=trained.run.curves_file, attention=self_attention,
                          target_attention=heatmap, lengths=os.path.join(output_dir, "sequence_lengths.png"))
    print(f"report: {report} (and report.md); total {stages.elapsed:.0f}s")
    return summary


def train_rating_model(config, dataset, split, output_dir: str, verbose: int = 1):
    """The rating model (``config``: a kernel autoencoder config) trained on ``split``'s rating
    table (:func:`tfrec_attn.data.leave_one_out_rating_split`): its TrainResult, or None (and a
    line saying so) when the data has no ratings."""
    import numpy as np

    from tfrec_attn.data import leave_one_out_rating_split
    from tfrec_attn.training import train

    table = leave_one_out_rating_split(split)
    if not np.isfinite(table.train.ratings).any() or not np.isfinite(table.test.ratings).any():
        print(f"{dataset.name} has no ratings: no rating model", flush=True)
        return None
    return train(config, dataset, output_dir, split=table, verbose=verbose)


def print_samples(samples, dataset) -> None:
    """Each sample user's recent history, held-out next item (by title) and recommendations,
    the held-out item marked where it is recommended (a hit)."""
    from tfrec_attn.app.report import HIT, because_text, held_out, hit_rank

    for sample in samples:
        recent = ", ".join(dataset.item_title(i) for i in sample["history"][-5:])
        print(f"\nuser {sample['user_id']} — {len(sample['history'])} items watched; most recent: {recent}")
        print(f"  {held_out(sample, dataset.item_title(sample['test_target']))}")
        hit = hit_rank(sample)
        for rank, rec in enumerate(sample["recommendations"], start=1):
            because = because_text(rec["because"])
            rating = f"  ~{rec['rating']:.1f}★" if rec.get("rating") is not None else ""
            mark = HIT if rank == hit else " "
            print(f" {mark}{rank:>2}. {rec['title'][:48]:<48} {rec['score']:7.3f}{rating}   because: {because}")


def load_pipeline_config(path: str | None, overrides=(), quick: bool = False) -> PipelineConfig:
    """Loads the pipeline config; ``quick`` applies its ``quick.overrides`` (to ``retrieval``)
    before the command line's ``--set`` overrides."""
    path = path or DEFAULT_CONFIG
    config = load_config(path, overrides, cls=PipelineConfig)
    if quick:
        config = load_config(path, [f"retrieval.{o}" for o in config.quick.overrides]
                             + [f"ranking.{o}" for o in config.quick.ranking_overrides]
                             + [f"rating.{o}" for o in config.quick.rating_overrides] + list(overrides),
                             cls=PipelineConfig)
    return config
