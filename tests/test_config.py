import pytest

from tfrec_attn.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_default_config_loads(tmp_path):
    import os

    config = load_config(os.path.join(os.path.dirname(__file__), "..", "training", "configs",
                                      "ml100k_retrieval.yaml"))
    assert config.model.max_len == 200 and config.export.k == 100


def test_errors_name_file_line_and_field(tmp_path):
    path = write(tmp_path, "seed: 1\nmodel:\n  embedding_dim: 64\n  num_heads: 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: model.num_heads=3 must divide model.embedding_dim=64$"):
        load_config(path)
    path = write(tmp_path, "model:\n  dropuot: 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: unknown key 'model.dropuot'; did you mean 'dropout'\?"):
        load_config(path)
    path = write(tmp_path, "train:\n  batch_size: lots\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: train.batch_size='lots' must be of type int"):
        load_config(path)


def test_overrides_and_their_errors(tmp_path):
    path = write(tmp_path, "model:\n  dropout: 0.5\n")
    config = load_config(path, ["model.dropout=0.25", "loss.type=in_batch", "train.jit_compile=true"])
    assert config.model.dropout == 0.25 and config.loss.type == "in_batch" and config.train.jit_compile
    with pytest.raises(ConfigError, match=r"^--set loss.type=softmax: loss.type='softmax' must be one of"):
        load_config(path, ["loss.type=softmax"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["model.dropout"])


def test_one_source_of_defaults_and_includes(tmp_path):
    """The shipped files name only what differs from the dataclass defaults; the pipeline
    file includes the retrieval file instead of copying it; errors in an included file
    name that file and line."""
    import dataclasses
    import os

    from tfrec_attn.config import PipelineConfig, RetrievalConfig

    configs = os.path.join(os.path.dirname(__file__), "..", "training", "configs")
    shipped = load_config(os.path.join(configs, "ml100k_retrieval.yaml"))
    assert dataclasses.asdict(shipped) == dataclasses.asdict(RetrievalConfig())
    pipeline = load_config(os.path.join(configs, "ml100k_pipeline.yaml"), cls=PipelineConfig)
    expected = dataclasses.asdict(RetrievalConfig())
    expected["train"]["time_budget_seconds"] = 480.0
    expected["model"]["item_tower"].update(type="ensemble", projection="mlp")
    assert dataclasses.asdict(pipeline.retrieval) == expected  # one model for known and new items
    assert pipeline.cold_start.time_budget_seconds == 180.0
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  dropout: 0.2\n  num_heads: 3\n")
    top = tmp_path / "top.yaml"
    top.write_text("retrieval:\n  include: base.yaml\n  model:\n    dropout: 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{base}:3: retrieval.model.num_heads=3 must divide retrieval.model.embedding_dim=64"):
        load_config(str(top), cls=PipelineConfig)
    config = load_config(str(top), ["retrieval.model.num_heads=2"], cls=PipelineConfig)
    assert config.retrieval.model.dropout == 0.1 and config.retrieval.model.num_heads == 2
    top.write_text("retrieval:\n  include: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml: cannot read the config"):
        load_config(str(top), cls=PipelineConfig)


def test_every_choice_list_comes_from_its_owner():
    from tfrec_attn.export.index import INDEX_TYPES
    from tfrec_attn.layers.item_tower import ITEM_TOWER_TYPES
    from tfrec_attn.tasks import LOSS_TYPES
    from tfrec_attn.training.distribute import STRATEGIES

    for key, choices in (("loss.type", LOSS_TYPES), ("train.strategy", STRATEGIES),
                         ("export.index", INDEX_TYPES), ("model.item_tower.type", ITEM_TOWER_TYPES)):
        with pytest.raises(ConfigError, match=f"must be one of {', '.join(choices)}$"):
            load_config(None, [f"{key}=nope"])
        load_config(None, [f"{key}={choices[0]}"])
    config = load_config(None, ["train.batch_size=128", "train.learning_rate_scaling=sqrt"])
    assert config.learning_rate() == pytest.approx(5e-3 * 2.0)  # sqrt(128 / 32)


def test_scientific_notation_without_a_dot_is_a_float():
    config = load_config(None, ["train.learning_rate=1e-3", "loss.temperature=5e-1"])
    assert config.train.learning_rate == 1e-3 and config.loss.temperature == 0.5
    with pytest.raises(ConfigError, match="train.learning_rate='fast' must be of type float"):
        load_config(None, ["train.learning_rate=fast"])


def test_resuming_with_another_model_is_refused_with_what_differs(tmp_path):
    from tfrec_attn.config import save_config
    from tfrec_attn.data.synthetic import planted_sequences
    from tfrec_attn.training.engine import Trainer
    from tfrec_attn.training.retrieval import RetrievalRecipe

    out = tmp_path / "run"
    (out / "backup" / "chief").mkdir(parents=True)
    (out / "backup" / "chief" / "checkpoint").write_text("x")  # an interrupted run's backup
    save_config(load_config(None, ["model.embedding_dim=32"]), str(out / "config.yaml"))
    config = load_config(None, ["model.embedding_dim=16", "train.epochs=5"])
    trainer = Trainer(RetrievalRecipe(config, planted_sequences(num_users=20)), config, str(out), verbose=0)
    with pytest.raises(ConfigError, match=r"another config \(model.embedding_dim: 32 -> 16\); rerun with its "
                                          r"config .* or delete .*backup to start afresh"):
        trainer.prepare()
    same = load_config(None, ["model.embedding_dim=32", "train.epochs=5"])  # train.epochs may change
    Trainer(RetrievalRecipe(same, planted_sequences(num_users=20)), same, str(out), verbose=0).prepare()


def test_learning_rate_schedules_follow_each_stage_and_bad_ones_are_named(tmp_path):
    from tfrec_attn.data.synthetic import planted_sequences
    from tfrec_attn.training.engine import Trainer
    from tfrec_attn.training.retrieval import RetrievalRecipe

    def trainer(*sets):
        config = load_config(None, ["train.epochs=4", "train.learning_rate=0.01", "train.batch_size=8", *sets])
        made = Trainer(RetrievalRecipe(config, planted_sequences(num_users=40)), config, str(tmp_path / "run"),
                       verbose=0)
        made.prepare()
        return made

    assert trainer().learning_rate_schedule() == 0.01  # constant: a plain float, no schedule object
    cosine = trainer("train.learning_rate_schedule=cosine", "train.warmup_epochs=1")
    steps, refit_steps = cosine.steps_per_epoch(False), cosine.steps_per_epoch(True)
    assert refit_steps >= steps > 1
    lr = cosine.learning_rate_schedule()
    assert float(lr(0)) < 0.01 / steps + 1e-9                       # warm-up starts near 0
    assert float(lr(steps)) == pytest.approx(0.01)                  # ... and ends after one epoch
    assert float(lr(steps + 1.5 * steps)) == pytest.approx(0.005, abs=1e-4)  # half-way down the cosine
    assert float(lr(4 * steps)) == pytest.approx(0.0, abs=1e-7)     # 0 at train.epochs
    # The refit's curve is laid out over its own epochs: epoch N ends at the same rate.
    refit = cosine.learning_rate_schedule(include_validation=True)
    assert float(refit(2 * refit_steps)) == pytest.approx(float(lr(2 * steps)), rel=1e-3)
    warmup = trainer("train.warmup_epochs=2").learning_rate_schedule()
    assert float(warmup(0)) == pytest.approx(0.01 / (2 * steps))
    assert float(warmup(2 * steps - 1)) == float(warmup(10 * steps)) == pytest.approx(0.01)
    with pytest.raises(ConfigError, match=r"train.learning_rate_schedule='step' must be one of"):
        load_config(None, ["train.learning_rate_schedule=step"])
    with pytest.raises(ConfigError, match=r"train.warmup_epochs=9.0 must be in \[0, train.epochs\)"):
        load_config(None, ["train.epochs=4", "train.warmup_epochs=9"])


def test_pipeline_item_tower_errors_name_their_field(tmp_path):
    from tfrec_attn.config import PipelineConfig

    path = write(tmp_path, "retrieval:\n  model:\n    item_tower:\n      type: ensemble\n      projection: deep\n")
    with pytest.raises(ConfigError, match=rf"^{path}:5: retrieval.model.item_tower.projection='deep' must be one "
                                          r"of linear, mlp$"):
        load_config(path, cls=PipelineConfig)
    with pytest.raises(ConfigError, match=r"^--set cold_start.item_tower.type=id: unknown key "):
        load_config(None, ["cold_start.item_tower.type=id"], cls=PipelineConfig)  # one model: no tower of its own
    with pytest.raises(ConfigError, match=r"^--set retrieval.model.item_tower.max_tokens=2: "
                                          r"retrieval.model.item_tower.max_tokens=2 must be >= 3"):
        load_config(None, ["retrieval.model.item_tower.max_tokens=2"], cls=PipelineConfig)


def test_every_recipe_config_loads_by_name_through_the_registry(tmp_path):
    import os

    from tfrec_attn.config import (
        KernelAutoencoderConfig,
        PipelineConfig,
        RankingConfig,
        RatingConfig,
        RetrievalConfig,
        recipe_names,
    )

    assert set(recipe_names()) >= {"retrieval", "ranking", "rating", "kernel_autoencoder", "pipeline"}
    expected = {"retrieval": RetrievalConfig, "ranking": RankingConfig, "rating": RatingConfig,
                "kernel_autoencoder": KernelAutoencoderConfig, "pipeline": PipelineConfig}
    for name, cls in expected.items():
        config = load_config(write(tmp_path, f"recipe: {name}\n"))
        assert type(config) is cls and config.recipe == name
    configs = os.path.join(os.path.dirname(__file__), "..", "training", "configs")
    shipped = {f: type(load_config(os.path.join(configs, f))) for f in sorted(os.listdir(configs))}
    assert shipped == {"ml100k_glocal_k.yaml": KernelAutoencoderConfig,
                       "ml100k_pipeline.yaml": PipelineConfig, "ml100k_ranking.yaml": RankingConfig,
                       "ml100k_rating.yaml": RatingConfig, "ml100k_retrieval.yaml": RetrievalConfig}
    # A file without `recipe:` is a retrieval config; a wrong recipe is refused at its line.
    assert type(load_config(write(tmp_path, "seed: 3\n"))) is RetrievalConfig
    path = write(tmp_path, "seed: 3\nrecipe: rankng\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: recipe='rankng' is not a known recipe; known: "
                                          r"kernel_autoencoder, pipeline, ranking, rating, retrieval$"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"recipe='ranking' must be rating"):  # a class asked for by name
        load_config(write(tmp_path, "recipe: ranking\n"), cls=RatingConfig)


def test_each_section_validates_itself_at_its_own_path(tmp_path):
    """The same section class names its whole path wherever it sits (a ranking run's `train`,
    the main job's `ranking.train`, a rating run's `split`), with the file and line."""
    path = write(tmp_path, "recipe: ranking\ntrain:\n  positions_per_user: -1\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: train.positions_per_user=-1 must be >= 0 \(0 = all\)$"):
        load_config(path)
    path = write(tmp_path, "recipe: pipeline\nranking:\n  train:\n    epochs: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: ranking.train.epochs=0 must be > 0$"):
        load_config(path)
    path = write(tmp_path, "recipe: rating\nsplit:\n  fold: 6\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: split.fold=6 must be in 1..5 \(u1..u5\)$"):
        load_config(path)
    path = write(tmp_path, "recipe: pipeline\nretrieval:\n  loss:\n    temperature: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: retrieval.loss.temperature=0.0 must be > 0$"):
        load_config(path)
    # A section given in part keeps its parent's defaults for the rest.
    config = load_config(write(tmp_path, "recipe: pipeline\ncold_start:\n  new_item:\n    title: A new film\n"))
    assert (config.cold_start.new_item.title, config.cold_start.new_item.item_id) == ("A new film", "new-1")
