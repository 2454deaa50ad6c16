"""The main job's config (``tfrec-attn run``, ``recipe: pipeline``): which recipes train,
what is served, the sample users, the cold-start stage and the ``--quick`` profile."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from tfrec_attn.config.errors import ConfigError
from tfrec_attn.config.ranking import RankingConfig
from tfrec_attn.config.rating import KernelAutoencoderConfig
from tfrec_attn.config.registry import register_config
from tfrec_attn.config.retrieval import RetrievalConfig
from tfrec_attn.config.sections import RunConfig, Section, get_path, one_of

BASELINES = ("MostPop", "ALS")


class ServedStage(NamedTuple):
    """A stage whose export may be served: the config path of its model name, the switch that
    runs it (None: always runs) and what the model answers."""

    name_path: str
    enabled_by: str | None
    description: str


# The exports of the main job, by the stage that trains them on the full data.
SERVED_STAGES = {
    "retrieval": ServedStage("retrieval.export.model_name", None,
                             "the two-tower transformer (history -> top-K item ids); with a tower that "
                             "reads text it also places new items by their text (`tfrec-attn index "
                             "add-items`; its tokenizer ops are in the stock binary)"),
    "ranking": ServedStage("ranking.export.model_name", "two_stage",
                           "the attention ranker (history + candidates -> scores, rating, attention)"),
    "recommend": ServedStage("ranking.export.recommend_name", "two_stage",
                             "retrieval + ranking in one graph (history -> items, rating, because)"),
    "rating": ServedStage("rating.export.model_name", "rating_model",
                          "the rating model, GLocal-K's kernel autoencoder (user id + item ids -> ratings; "
                          "a user without training ratings gets each item's mean)"),
}


class ServedModel(NamedTuple):
    """One model the main job serves: its name (the export's directory), the stage that trains
    it, and what it answers."""

    name: str
    stage: str
    description: str


@dataclasses.dataclass
class QuickConfig(Section):
    """The ``--quick`` smoke profile: a user subset and cheaper training."""

    max_users: int = 300
    overrides: list[str] = dataclasses.field(default_factory=list)
    ranking_overrides: list[str] = dataclasses.field(default_factory=list)
    rating_overrides: list[str] = dataclasses.field(default_factory=list)
    cold_start_budget_seconds: float = 40.0  # the cold-split training (an ensemble splits it)

    def checks(self, at):
        return [("max_users", self.max_users >= 10, "must be >= 10")]


@dataclasses.dataclass
class NewItemConfig(Section):
    """An item that is not in the data, added to the running server by its text."""

    item_id: str = "new-1"
    title: str = "Star Wars: Episode I - The Phantom Menace (1999)"
    genres: list[str] = dataclasses.field(default_factory=lambda: ["Action", "Adventure", "Fantasy", "Sci-Fi"])
    description: str = ""


@dataclasses.dataclass
class ColdStartConfig(Section):
    """The cold-start stage: the protocol's table (:mod:`tfrec_attn.evaluation.cold_start`)
    for the main retrieval model's config trained again on the cold split (and, for an
    ensemble, each of its parts alone), and a new item added by its text to the running
    ``retrieval`` model — the one model that serves known and new items (its item tower must
    read text; an id tower's export cannot place a new item, and the stage says so)."""

    enabled: bool = True
    fraction: float = 0.2  # of evaluated users whose test targets become cold items
    time_budget_seconds: float = 180.0  # the cold-split training (an ensemble splits it between its parts)
    new_item: NewItemConfig = dataclasses.field(default_factory=NewItemConfig)
    users_to_scan: int = 300  # test users asked over gRPC whether the new item is now in their top k

    def checks(self, at):
        return [
            ("fraction", 0 < self.fraction <= 1, "must be in (0, 1]"),
            ("time_budget_seconds", self.time_budget_seconds > 0, "must be > 0"),
        ]


@dataclasses.dataclass
class ServedModelConfig(Section):
    """One entry of ``serve``: a model, named by the stage that trains it on the full data
    (``SERVED_STAGES``): ``retrieval`` (``retrieval.export.model_name``), ``ranking``
    (``ranking.export.model_name``), ``recommend`` (retrieval + ranking in one graph,
    ``ranking.export.recommend_name``) or ``rating`` (``rating.export.model_name``).

    The entry has no name of its own: each model's name is declared once, in its stage's
    export config, which the standalone recipes (``tfrec-attn train``) read too; the list
    says only which of those exports are served.

    Example (in the pipeline YAML, with ``cold_start.enabled: false``: the two models the main
    job asks, not the retrieval model, which the cold-start stage asks for its new item)::

        serve:
          - stage: ranking
          - stage: recommend
    """

    stage: str = "retrieval"

    def checks(self, at):
        return [("stage", self.stage in SERVED_STAGES, one_of(SERVED_STAGES))]


def _default_serve() -> list[ServedModelConfig]:
    return [ServedModelConfig(stage) for stage in ("retrieval", "ranking", "recommend", "rating")]


@register_config("pipeline")
@dataclasses.dataclass
class PipelineConfig(RunConfig):
    """``tfrec-attn run``: train -> evaluate -> export -> serve -> query, and a report."""

    recipe: str = "pipeline"
    retrieval: RetrievalConfig = dataclasses.field(default_factory=RetrievalConfig)
    two_stage: bool = True  # train the ranking model on the retrieval candidates, serve `recommend`
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    # Train the rating model (GLocal-K, `rating`) on the rating table: each evaluated user's
    # newest event is the test, every earlier one trains (skipped when the data has no ratings).
    rating_model: bool = True
    rating: KernelAutoencoderConfig = dataclasses.field(default_factory=KernelAutoencoderConfig)
    baselines: list[str] = dataclasses.field(default_factory=lambda: list(BASELINES))
    sample_users: int = 3  # users whose recommendations are queried and shown
    k: int = 10  # recommendations shown per user
    cold_start: ColdStartConfig = dataclasses.field(default_factory=ColdStartConfig)
    quick: QuickConfig = dataclasses.field(default_factory=QuickConfig)
    # What may be served, in this order: the main job's models.config, and the deployment files
    # in serving/ (tools/write_serving_files.py). A stage this run skips (two_stage: false,
    # cold_start.enabled: false) is left out, not an error.
    serve: list[ServedModelConfig] = dataclasses.field(default_factory=_default_serve)

    def checks(self, at):
        unknown = [name for name in self.baselines if name not in BASELINES]
        return super().checks(at) + [
            ("baselines", not unknown, f"has {unknown[0] if unknown else ''!r}; known: {', '.join(BASELINES)}"),
            ("sample_users", self.sample_users >= 1, "must be >= 1"),
            ("k", self.k >= 1, "must be >= 1"),
        ]

    def stage_enabled(self, stage: str) -> bool:
        switch = SERVED_STAGES[stage].enabled_by
        return switch is None or bool(get_path(self, switch))

    def queried_stages(self) -> list[str]:
        """The stages whose served models the main job asks (its "serve and query" stage):
        ``recommend`` and ``ranking`` (the heatmap) with two_stage, and ``retrieval`` without
        it or when the cold-start stage adds its new item to it."""
        asked = ["ranking", "recommend"] if self.two_stage else []
        return asked + (["retrieval"] if self.cold_start.enabled or not self.two_stage else [])

    def served_models(self) -> list[ServedModel]:
        """``serve`` less the stages this run skips, with each model's name from its stage's
        config. Example: the defaults give ``retrieval``, ``ranking``, ``recommend``; with
        ``two_stage: false``, ``retrieval``."""
        return [ServedModel(get_path(self, SERVED_STAGES[entry.stage].name_path), entry.stage,
                            SERVED_STAGES[entry.stage].description)
                for entry in self.serve if self.stage_enabled(entry.stage)]

    def validate(self, where=lambda path: path, prefix: str = "") -> None:
        """The sections, then each ``serve`` entry at its path (``serve[1].stage``), then: each
        stage listed once, the exports of the stages that run named apart (each is
        ``OUTPUT/export/<name>``), and every model the job queries served."""
        super().validate(where, prefix)  # each `serve` entry at its path too (``serve[1].stage``)
        first: dict[str, int] = {}
        for i, entry in enumerate(self.serve):
            if entry.stage in first:
                raise ConfigError(f"{self.where(f'serve[{i}].stage')}: serve[{i}].stage={entry.stage!r} is listed "
                                  f"twice (serve[{first[entry.stage]}] too)")
            first[entry.stage] = i
        owner: dict[str, str] = {}
        for stage, served in SERVED_STAGES.items():
            if not self.stage_enabled(stage):
                continue
            name = get_path(self, served.name_path)
            if name in owner:
                raise ConfigError(f"{self.where(served.name_path)}: {served.name_path}={name!r} is also "
                                  f"{owner[name]}; each export needs its own name (OUTPUT/export/<name>)")
            owner[name] = served.name_path
        missing = [stage for stage in self.queried_stages() if stage not in first]
        if missing:
            raise ConfigError(f"{self.where('serve')}: serve={[e.stage for e in self.serve]} must list "
                              f"{missing[0]!r}: the main job's serve stage asks that model "
                              f"({SERVED_STAGES[missing[0]].name_path})")
