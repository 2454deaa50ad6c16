"""``tfrec-attn run``: the whole product on real data, one stage after another.

prepare data -> baselines (MostPop, ALS) -> train retrieval -> train the attention ranker on
the retrieval candidates -> evaluate everything with the full-ranking protocol (retrieval
only and two-stage) and the rating table -> the cold-start protocol's table (a text item
tower trained without the cold items, against the id-only tower) -> export versioned
SavedModels (retrieval, ranking, recommend, and the text tower's ``retrieval_text``) -> start
the local gRPC server -> query the ``recommend`` model through the client for a few users ->
print their recommendations with titles, scores, predicted ratings and the history items
that explain them (target attention) -> add a new item to the running ``retrieval_text`` by
its text -> stop the server -> write the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import yaml

from tfrec_attn.training.config import (
    ConfigError,
    ItemTowerConfig,
    RetrievalConfig,
    load_config,
    save_config,
)
from tfrec_attn.training.ranking_config import RankingConfig


@dataclasses.dataclass
class QuickConfig:
    """The ``--quick`` smoke profile: a user subset and cheaper training."""

    max_users: int = 300
    overrides: list[str] = dataclasses.field(default_factory=list)
    ranking_overrides: list[str] = dataclasses.field(default_factory=list)
    cold_start_budget_seconds: float = 20.0  # per cold-split training


@dataclasses.dataclass
class NewItemConfig:
    """An item that is not in the data, added to the running server by its text."""

    item_id: str = "new-1"
    title: str = "Star Wars: Episode I - The Phantom Menace (1999)"
    genres: list[str] = dataclasses.field(default_factory=lambda: ["Action", "Adventure", "Fantasy", "Sci-Fi"])
    description: str = ""


@dataclasses.dataclass
class ColdStartConfig:
    """The cold-start stage: the protocol's table (:mod:`tfrec_attn.evaluation.cold_start`)
    for ``item_tower`` (and the id-only tower), and a new item added by its text to the
    running server through that tower's export, ``model_name``. The main retrieval model
    keeps the item tower measured best on warm users (``retrieval.model.item_tower``)."""

    enabled: bool = True
    fraction: float = 0.2  # of evaluated users whose test targets become cold items
    time_budget_seconds: float = 90.0  # per cold-split training (the item tower and id-only)
    compare_id: bool = True  # also train the id-only tower on the cold split (cold ids are OOV)
    # The tower that reads item text, trained on the cold split: the text tower with the MLP
    # projection is the measured cold-start choice (docs/benchmarks.md, "Cold start").
    item_tower: ItemTowerConfig = dataclasses.field(
        default_factory=lambda: ItemTowerConfig(type="text", projection="mlp"))
    model_name: str = "retrieval_text"  # its export, served next to the main models
    new_item: NewItemConfig = dataclasses.field(default_factory=NewItemConfig)
    users_to_scan: int = 300  # test users asked over gRPC whether the new item is now in their top k


@dataclasses.dataclass
class PipelineConfig:
    """``tfrec-attn run``: train -> evaluate -> export -> serve -> query, and a report."""

    retrieval: RetrievalConfig = dataclasses.field(default_factory=RetrievalConfig)
    two_stage: bool = True  # train the ranking model on the retrieval candidates, serve `recommend`
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    baselines: list[str] = dataclasses.field(default_factory=lambda: ["MostPop", "ALS"])
    sample_users: int = 3  # users whose recommendations are queried and shown
    k: int = 10  # recommendations shown per user
    cold_start: ColdStartConfig = dataclasses.field(default_factory=ColdStartConfig)
    quick: QuickConfig = dataclasses.field(default_factory=QuickConfig)

    def validate(self, where=lambda path: path) -> None:
        self.retrieval.validate(lambda p: where(f"retrieval.{p}"))
        self.ranking.validate(lambda p: where(f"ranking.{p}"))
        for name in self.baselines:
            if name not in ("MostPop", "ALS"):
                raise ConfigError(f"{where('baselines')}: baselines has {name!r}; known: MostPop, ALS")
        if self.sample_users < 1 or self.k < 1 or self.quick.max_users < 10:
            raise ConfigError(f"{where('sample_users')}: sample_users, k must be >= 1 and "
                              "quick.max_users >= 10")
        if not 0 < self.cold_start.fraction <= 1:
            raise ConfigError(f"{where('cold_start.fraction')}: cold_start.fraction must be in (0, 1]")
        if self.cold_start.time_budget_seconds <= 0:
            raise ConfigError(f"{where('cold_start.time_budget_seconds')}: must be > 0")
        if self.cold_start.item_tower.type not in ("text", "hybrid"):
            raise ConfigError(f"{where('cold_start.item_tower.type')}: cold_start.item_tower.type="
                              f"{self.cold_start.item_tower.type!r} must be text or hybrid (it embeds new items "
                              "from their text)")
        self.cold_start.item_tower.validate(where, prefix="cold_start.item_tower")

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


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


def start_server(model_config_file: str, poll_seconds: float = 0):
    """Serves the models of a TF Serving ``model_config_list`` file. ``poll_seconds``: 0 loads
    the versions once (TF Serving's meaning); > 0 polls for new ones."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfrec_attn.app.cli", "serve", "--port", "0", "--host", "127.0.0.1",
         "--model_config_file", model_config_file, "--file_system_poll_wait_seconds", str(poll_seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"the model server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, f"127.0.0.1:{match.group(1)}"


def stop_server(proc) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


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
    stages = Stages(7 + cold_stage + two_stage)
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
    from tfrec_attn.training.retrieval import train_retrieval

    run_dir = os.path.join(output_dir, "retrieval")
    trained = train_retrieval(retrieval_config, dataset, run_dir, verbose=verbose, split=split)
    results["Transformer retrieval"] = trained.metrics["test"]
    timings["Transformer retrieval"] = trained.metrics["train_seconds"]

    # 3b. ranking ---------------------------------------------------------------------
    ranked = None
    ratings = {}
    if two_stage:
        from tfrec_attn.app.two_stage import rating_table, train_ranking_stage

        stages(f"train ranking ({config.ranking.model.attention.upper()} target attention) on the retrieval "
               f"top-{config.ranking.retrieval.candidates}")
        ranked = train_ranking_stage(config.ranking, dataset, split, retrieval_config, trained, output_dir,
                                     verbose=verbose)
        test = ranked.metrics["test"]
        name = f"Two-stage (retrieval + {config.ranking.model.attention.upper()} ranking)"
        results[name] = {k: v for k, v in test.items() if "_" not in k}
        timings[name] = trained.metrics["train_seconds"] + ranked.metrics["train_seconds"]
        ratings = rating_table(split, test)

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

    # 4b. cold start: a text item tower vs the id-only tower ---------------------------
    cold_start = cold_trained = None
    if cold_stage:
        stages(f"cold start: items known only by their text ({config.cold_start.item_tower.type} item tower, "
               "cold-start protocol)")
        from tfrec_attn.app.cold_start import cold_start_table

        budget = config.quick.cold_start_budget_seconds if quick else config.cold_start.time_budget_seconds
        cold_start, cold_trained = cold_start_table(
            dataset, split, retrieval_config, dataclasses.replace(config.cold_start, time_budget_seconds=budget),
            output_dir, verbose=0)

    # 5. export -----------------------------------------------------------------------
    stages("export versioned SavedModels")
    from tfrec_attn.export import export_retrieval

    export_base = os.path.join(output_dir, "export")
    model_name = retrieval_config.export.model_name
    exported = export_retrieval(trained.model, trained.vocabulary, export_base, model_name=model_name,
                                k=retrieval_config.export.k, index="brute_force")
    print(f"exported {exported}")
    served = [model_name]
    if ranked is not None:
        print(f"exported {ranked.recipe.export(ranked.model, export_base)}")
        print(f"exported {ranked.recipe.export_recommend(ranked.model, export_base)}")
        served += [config.ranking.export.model_name, config.ranking.export.recommend_name]
    if cold_trained is not None:  # new items are embedded from their text by this one
        text_export = export_retrieval(cold_trained.model, cold_trained.vocabulary, export_base,
                                       model_name=config.cold_start.model_name, k=retrieval_config.export.k,
                                       index="brute_force")
        print(f"exported {text_export} (the cold-start stage's {config.cold_start.item_tower.type} tower)")
        served.append(config.cold_start.model_name)
    from tfrec_attn.app.two_stage import write_models_config

    models_config = write_models_config(export_base, served)

    # 6. serve + query ----------------------------------------------------------------
    stages("serve (local gRPC server) and query through the client")
    from tfrec_attn.serving.client import RecommenderClient

    proc, target = start_server(models_config, 0.5 if cold_stage else 0)
    samples = []
    heatmap = None
    try:
        print(f"server up at {target} (pid {proc.pid}), serving {', '.join(served)}")
        rng = np.random.default_rng(retrieval_config.seed)
        chosen = rng.choice(split.evaluated, size=min(config.sample_users, len(split.evaluated)), replace=False)
        asked = config.ranking.export.recommend_name if ranked is not None else model_name
        with RecommenderClient(target, model_name=asked) as client:
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
                why = {rec.item_id: rec.because for rec in recs} if ranked is not None \
                    else client.explain(history, [item for item, _ in recs])
                samples.append({
                    "user_id": str(split.user_ids[user]),
                    "history": history,
                    "test_target": str(split.item_vocab[split.sequences[user][-1]]),
                    "model": asked,
                    "recommendations": [{"item_id": rec[0], "title": dataset.item_title(rec[0]), "score": rec[1],
                                         "rating": getattr(rec, "rating", None),
                                         "because": [{"item_id": h, "title": dataset.item_title(h), "weight": w}
                                                     for h, w in why[rec[0]]]}
                                        for rec in recs],
                })
        if ranked is not None and samples:
            from tfrec_attn.app.two_stage import heatmap_from_server

            with RecommenderClient(target, model_name=config.ranking.export.model_name) as client:
                heatmap = heatmap_from_server(client, samples[0]["history"],
                                              [r["item_id"] for r in samples[0]["recommendations"]], dataset,
                                              os.path.join(output_dir, "target_attention.png"),
                                              last=config.ranking.model.max_len)
        if cold_stage:
            from tfrec_attn.app.cold_start import new_item_demo

            text_model = config.cold_start.model_name
            with RecommenderClient(target, model_name=text_model) as client:
                cold_start["new_item"] = new_item_demo(
                    client, export_base, text_model, config.cold_start.new_item, cold_trained, split, dataset,
                    config.k, config.cold_start.users_to_scan, retrieval_config.seed)
    finally:
        code = stop_server(proc)
    print_samples(samples, dataset)
    print(f"server stopped (exit code {code})")

    # 7. report -----------------------------------------------------------------------
    stages("report")
    from tfrec_attn.app.plots import plot_attention
    from tfrec_attn.app.report import write_report

    self_attention = None
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
        "two_stage": None if ranked is None else {
            "metrics": ranked.metrics["test"], "validation": ranked.metrics["validation"],
            "best_epoch": ranked.metrics["best_epoch"], "epochs": ranked.metrics["epochs"],
            "train_seconds": ranked.metrics["train_seconds"], "attention": config.ranking.model.attention,
            "candidates": config.ranking.retrieval.candidates, "ratings": ratings},
    }
    with open(os.path.join(output_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    report = write_report(output_dir, summary, curves=os.path.join(run_dir, "curves.png"), attention=self_attention,
                          target_attention=heatmap, lengths=os.path.join(output_dir, "sequence_lengths.png"))
    print(f"report: {report} (and report.md); total {stages.elapsed:.0f}s")
    return summary


def print_samples(samples, dataset) -> None:
    for sample in samples:
        recent = ", ".join(dataset.item_title(i) for i in sample["history"][-5:])
        print(f"\nuser {sample['user_id']} — {len(sample['history'])} items watched; most recent: {recent}")
        for rank, rec in enumerate(sample["recommendations"], start=1):
            because = "; ".join(f"{b['title']} ({b['weight']:+.2f})" for b in rec["because"])
            rating = f"  ~{rec['rating']:.1f}★" if rec.get("rating") is not None else ""
            print(f"  {rank:>2}. {rec['title'][:48]:<48} {rec['score']:7.3f}{rating}   because: {because}")


def load_pipeline_config(path: str | None, overrides=(), quick: bool = False) -> PipelineConfig:
    """Loads the pipeline config; ``quick`` applies its ``quick.overrides`` (to ``retrieval``)
    before the command line's ``--set`` overrides."""
    path = path or DEFAULT_CONFIG
    config = load_config(path, overrides, cls=PipelineConfig)
    if quick:
        config = load_config(path, [f"retrieval.{o}" for o in config.quick.overrides]
                             + [f"ranking.{o}" for o in config.quick.ranking_overrides] + list(overrides),
                             cls=PipelineConfig)
    return config
