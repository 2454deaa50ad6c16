"""Typed configuration: nested dataclasses loaded from YAML with ``--set`` overrides.

Every error names where the offending value came from, e.g.
``training/configs/ml100k_retrieval.yaml:14: model.num_heads=3 must divide embedding_dim=64``
or ``--set model.dropout=2: must be in [0, 1)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


LR_SCALING = ("none", "linear", "sqrt")
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class DataConfig:
    """Where the data comes from (command-line ``--data`` etc. override these)."""

    dataset: str = "ml-100k"  # MovieLens release, when reading MovieLens
    min_interactions: int = 3  # users with fewer interactions only train
    sequence_files: str = ""  # train from `tfrec-attn data prepare` TFRecords (FILE-sharded)


@dataclasses.dataclass
class ItemTowerConfig:
    """The item tower (:mod:`tfrec_attn.layers.item_tower`): ``id``, ``text`` or ``hybrid``.

    ``id`` is the default: it needs nothing but interactions, and on ML-100K it is also the
    best on known items (validation and test). ``text`` is the measured choice for items
    never seen in training (cold start); the main job trains both
    (training/configs/ml100k_pipeline.yaml, docs/benchmarks.md)."""

    type: str = "id"
    # text / hybrid: the pretrained BERT (Hugging Face name or local directory) and how it reads
    encoder: str = "sentence-transformers/all-MiniLM-L6-v2"
    max_tokens: int = 64  # tokens per item text, [CLS] and [SEP] included
    pooling: str = "mean"  # mean | cls
    projection: str = "linear"  # text features -> embedding: linear | mlp
    # hybrid: how the id embedding and the text projection combine
    fusion: str = "sum"  # sum | gated | concat_mlp
    id_dropout: float = 0.3  # replace a training item's id by OOV at this rate (learn to embed from text)
    id_dropout_candidates: bool = False  # ... on the candidate side too (cold start; costs some warm accuracy)
    # 0: frozen encoder, catalogue features computed once and cached (fast path);
    # N > 0: fine-tune the encoder's last N layers with their own learning rate
    trainable_layers: int = 0
    encoder_learning_rate: float = 1e-4

    def validate(self, where=lambda path: path, prefix: str = "model.item_tower") -> None:
        """Raises :class:`ConfigError` naming the value's origin; ``prefix``: where this
        tower sits in its config (a retrieval model's, or the main job's cold-start tower)."""
        from tfrec_attn.layers.item_tower import FUSION_TYPES, ITEM_TOWER_TYPES, PROJECTION_TYPES
        from tfrec_attn.layers.text_encoder import POOLING_TYPES

        def one_of(choices):
            return f"must be one of {', '.join(choices)}"

        checks = [
            ("type", self.type in ITEM_TOWER_TYPES, one_of(ITEM_TOWER_TYPES)),
            ("max_tokens", self.max_tokens >= 3, "must be >= 3 ([CLS] text [SEP])"),
            ("pooling", self.pooling in POOLING_TYPES, one_of(POOLING_TYPES)),
            ("projection", self.projection in PROJECTION_TYPES, one_of(PROJECTION_TYPES)),
            ("fusion", self.fusion in FUSION_TYPES, one_of(FUSION_TYPES)),
            ("id_dropout", 0.0 <= self.id_dropout < 1.0, "must be in [0, 1)"),
            ("trainable_layers", self.trainable_layers >= 0, "must be >= 0 (0 = frozen)"),
            ("encoder_learning_rate", self.encoder_learning_rate > 0, "must be > 0"),
        ]
        for name, ok, problem in checks:
            if not ok:
                path = f"{prefix}.{name}"
                raise ConfigError(f"{where(path)}: {path}={getattr(self, name)!r} {problem}")


@dataclasses.dataclass
class ModelConfig:
    """The transformer user tower and the item tower."""

    embedding_dim: int = 64
    max_len: int = 200  # most recent history items the user tower reads
    num_blocks: int = 2
    num_heads: int = 1
    ffn_dim: int = 0  # 0 = embedding_dim
    dropout: float = 0.3
    attention_dropout: float = -1.0  # < 0 = same as dropout
    norm_first: bool = True  # pre-LN (True) or post-LN (False)
    positional: str = "learned"  # learned | none
    scale_embeddings: bool = True  # multiply history item embeddings by sqrt(embedding_dim)
    item_bias: bool = False  # score = user . item + b_item (a learned popularity prior)
    item_tower: ItemTowerConfig = dataclasses.field(default_factory=ItemTowerConfig)


@dataclasses.dataclass
class LossConfig:
    """Next-item prediction objective at every position."""

    type: str = "sampled"  # tfrec_attn.tasks.LOSS_TYPES: full | sampled | in_batch
    num_negatives: int = 2048  # sampled: negatives per step (>= catalogue size: exact full softmax)
    temperature: float = 0.5  # logits / temperature (chosen on validation)
    label_smoothing: float = 0.2  # mass on each query's negatives (chosen on validation)
    sampling_alpha: float = 0.75  # sampled: negatives drawn ~ count**alpha (logQ-corrected)
    max_positions: int = 4096  # in_batch: positions per batch used as queries (memory bound)
    future_window: int = 1  # each position predicts the next `future_window` items (1 = next only)
    future_weight: float = 1.0  # weight of targets beyond the next one


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 80
    batch_size: int = 32  # the GLOBAL batch; each of N replicas gets batch_size / N
    learning_rate: float = 5e-3
    learning_rate_scaling: str = "none"  # none | linear | sqrt: x (batch_size / reference_batch_size)
    reference_batch_size: int = 32  # the batch size `learning_rate` was chosen for
    # constant, or cosine decay to 0 over `epochs` epochs (the same curve in selection and refit,
    # whose shorter run stops where the chosen epoch was), after `warmup_epochs` of linear warm-up
    learning_rate_schedule: str = "constant"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0  # decoupled (AdamW) when > 0
    clipnorm: float = 0.0
    weight_averaging: float = 0.0  # > 0: the optimizer's EMA of the weights (this momentum) is judged and kept
    refit_with_validation: bool = True  # after selection, retrain on train + validation targets
    eval_every: int = 1  # epochs between validation evaluations
    patience: int = 15  # evaluations without improvement before stopping
    time_budget_seconds: float = 0.0  # 0 = no limit; else stop after this much training time
    jit_compile: bool = False
    mixed_precision: bool = False
    bucket_by_length: bool = True
    shuffle_ties: bool = True  # re-draw the order of same-timestamp items every epoch
    older_windows: bool = False  # histories > max_len also train on their older windows
    steps_per_execution: int = 8  # training steps per tf.function call (1.1x on a large catalogue)
    strategy: str = "auto"  # tfrec_attn.training.distribute.STRATEGIES
    backup_every_steps: int = 0  # BackupAndRestore save_freq in steps (0 = a quarter of an epoch)
    peer_timeout_seconds: float = 600.0  # multi-worker: fail if the cluster trains no step by then


@dataclasses.dataclass
class ExportConfig:
    k: int = 100
    index: str = "brute_force"  # brute_force (TF Serving) | scann (needs `import scann`)
    model_name: str = "retrieval"


class RunConfig:
    """What every recipe's root config shares (a dataclass with ``seed``, ``train`` ...)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def origin(self, path: str) -> str:
        """Where the value at ``path`` came from (``file:line``, ``--set ...``), for errors."""
        where = getattr(self, "where", None)
        return where(path) if where else path

    def learning_rate(self) -> float:
        """``train.learning_rate`` scaled by ``train.learning_rate_scaling`` for the global batch."""
        ratio = self.train.batch_size / self.train.reference_batch_size
        scale = {"none": 1.0, "linear": ratio, "sqrt": ratio ** 0.5}[self.train.learning_rate_scaling]
        return self.train.learning_rate * scale

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@dataclasses.dataclass
class RetrievalConfig(RunConfig):
    recipe: str = "retrieval"
    seed: int = 42
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

    def validate(self, where=lambda path: path) -> None:
        """Raises :class:`ConfigError` naming the value's origin (``where(path)``)."""
        from tfrec_attn.data.movielens import RELEASES
        from tfrec_attn.export.index import INDEX_TYPES
        from tfrec_attn.layers.attention import POSITIONAL_TYPES
        from tfrec_attn.tasks.next_item import LOSS_TYPES
        from tfrec_attn.training.distribute import STRATEGIES

        def one_of(choices):
            return f"must be one of {', '.join(choices)}"

        self.where = where
        m, loss, train, export = self.model, self.loss, self.train, self.export
        checks = [
            ("recipe", self.recipe == "retrieval", "must be retrieval"),
            ("model.embedding_dim", m.embedding_dim > 0, "must be > 0"),
            ("model.max_len", m.max_len > 0, "must be > 0"),
            ("model.num_blocks", m.num_blocks >= 0, "must be >= 0"),
            ("model.num_heads", m.num_heads > 0 and m.embedding_dim % m.num_heads == 0,
             f"must divide model.embedding_dim={m.embedding_dim}"),
            ("model.dropout", 0.0 <= m.dropout < 1.0, "must be in [0, 1)"),
            ("model.attention_dropout", m.attention_dropout < 1.0, "must be < 1"),
            ("model.ffn_dim", m.ffn_dim >= 0, "must be >= 0 (0 = embedding_dim)"),
            ("model.positional", m.positional in POSITIONAL_TYPES, one_of(POSITIONAL_TYPES)),
            ("loss.type", loss.type in LOSS_TYPES, one_of(LOSS_TYPES)),
            ("loss.num_negatives", loss.num_negatives > 0, "must be > 0"),
            ("loss.temperature", loss.temperature > 0, "must be > 0"),
            ("loss.label_smoothing", 0.0 <= loss.label_smoothing < 1.0, "must be in [0, 1)"),
            ("loss.sampling_alpha", 0.0 <= loss.sampling_alpha <= 1.0, "must be in [0, 1]"),
            ("loss.max_positions", loss.max_positions > 0, "must be > 0"),
            ("loss.future_window", loss.future_window >= 1, "must be >= 1"),
            ("loss.future_weight", loss.future_weight >= 0, "must be >= 0"),
            ("train.epochs", train.epochs > 0, "must be > 0"),
            ("train.batch_size", train.batch_size > 0, "must be > 0"),
            ("train.learning_rate", train.learning_rate > 0, "must be > 0"),
            ("train.learning_rate_scaling", train.learning_rate_scaling in LR_SCALING,
             one_of(LR_SCALING)),
            ("train.learning_rate_schedule", train.learning_rate_schedule in LR_SCHEDULES,
             one_of(LR_SCHEDULES)),
            ("train.warmup_epochs", 0.0 <= train.warmup_epochs < train.epochs, "must be in [0, train.epochs)"),
            ("train.reference_batch_size", train.reference_batch_size > 0, "must be > 0"),
            ("train.steps_per_execution", train.steps_per_execution > 0, "must be > 0"),
            ("train.strategy", train.strategy in STRATEGIES, one_of(STRATEGIES)),
            ("train.backup_every_steps", train.backup_every_steps >= 0, "must be >= 0 (0 = a quarter of an epoch)"),
            ("train.peer_timeout_seconds", train.peer_timeout_seconds >= 0, "must be >= 0 (0 = wait forever)"),
            ("train.eval_every", train.eval_every > 0, "must be > 0"),
            ("train.weight_averaging", 0.0 <= train.weight_averaging < 1.0, "must be in [0, 1)"),
            ("train.patience", train.patience > 0, "must be > 0"),
            ("export.k", export.k > 0, "must be > 0"),
            ("export.index", export.index in INDEX_TYPES, one_of(INDEX_TYPES)),
            ("data.min_interactions", self.data.min_interactions >= 3, "must be >= 3"),
            ("data.dataset", self.data.dataset in RELEASES, one_of(sorted(RELEASES))),
        ]
        for path, ok, problem in checks:
            if not ok:
                raise ConfigError(f"{where(path)}: {path}={_get(self, path)!r} {problem}")
        m.item_tower.validate(where)



def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _compose_lines(text: str) -> dict[str, int]:
    """Maps dotted key paths to 1-based line numbers in a YAML document."""
    lines: dict[str, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines[path] = key.start_mark.line + 1
                walk(value, path)

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return lines


def _coerce(value: Any, annotation, where: str, path: str):
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {path}={value!r} must be a list")
        (item,) = set(typing.get_args(annotation)) - {Ellipsis}
        return [_coerce(v, item, where, f"{path}[{i}]") for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: {path}={value!r} must be true or false")
    if annotation in (int, float, str) and (not isinstance(value, annotation) or isinstance(value, bool)):
        raise ConfigError(f"{where}: {path}={value!r} must be of type {annotation.__name__}")
    return value


def _build(cls, data: dict, lines: dict, origin: str, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}:{lines.get(prefix, 1)}: {prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        where = lines.get(path, origin) if isinstance(lines.get(path), str) else f"{origin}:{lines.get(path, '?')}"
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(names))}"
            raise ConfigError(f"{where}: unknown key '{path}'{hint}")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            kwargs[key] = _build(annotation, value, lines, origin, path)
        else:
            if isinstance(annotation, types.UnionType):
                annotation = next(a for a in annotation.__args__ if a is not type(None))
            kwargs[key] = _coerce(value, annotation, where, path)
    return cls(**kwargs)


def _set_path(tree: dict, path: str, value) -> None:
    parts = path.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {path}: '{part}' is not a section")
    node[parts[-1]] = value


def _read_tree(path: str, prefix: str = "", seen=()) -> tuple[dict, dict]:
    """A YAML file's tree and ``{dotted path: "file:line"}``, with ``include:`` resolved.

    A mapping with an ``include: other.yaml`` key (path relative to the including file)
    starts from that file's tree; its own keys override it. One file thus holds each
    default, and a file that needs it refers to it instead of copying it.
    """
    if os.path.abspath(path) in seen:
        raise ConfigError(f"{path}: included from itself ({' -> '.join(seen)})")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config: {error.strerror}") from None
    try:
        tree = yaml.safe_load(text) or {}
        lines = {f"{prefix}.{k}" if prefix else k: f"{path}:{n}" for k, n in _compose_lines(text).items()}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    seen = (*seen, os.path.abspath(path))

    def resolve(node, at):
        if not isinstance(node, dict):
            return node
        if "include" in node:
            where = lines.get(f"{at}.include" if at else "include", path)
            target = node.pop("include")
            if not isinstance(target, str):
                raise ConfigError(f"{where}: include={target!r} must be a file path")
            base, base_lines = _read_tree(os.path.join(os.path.dirname(path), target), at, seen)
            lines.update({k: v for k, v in base_lines.items() if k not in lines})
            node = _merge(base, node)
        return {k: resolve(v, f"{at}.{k}" if at else str(k)) for k, v in node.items()}

    return resolve(tree, prefix), lines


def _merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return merged


def recipe_configs() -> dict:
    """``recipe`` name -> its root config class."""
    from tfrec_attn.training.ranking_config import RankingConfig

    return {"retrieval": RetrievalConfig, "ranking": RankingConfig}


def load_config(path: str | None = None, overrides=(), cls=None):
    """Loads ``path`` (YAML; None = defaults), applies ``key=value`` overrides, validates.

    Args:
        path: str or None.
        overrides: iterable of ``"dotted.key=value"`` strings (values parsed as YAML).
        cls: the root dataclass (None: the one the config's ``recipe`` key names,
            retrieval by default).
    """
    tree, lines = _read_tree(path) if path else ({}, {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key, value)
        lines[key] = f"--set {key}={raw}"
    origin = path or "<defaults>"
    if cls is None:
        recipe, configs = tree.get("recipe", "retrieval"), recipe_configs()
        if recipe not in configs:
            line = lines.get("recipe")
            where = line if isinstance(line, str) else f"{origin}:{line or 1}"
            raise ConfigError(f"{where}: recipe={recipe!r} must be one of {', '.join(configs)}")
        cls = configs[recipe]
    config = _build(cls, tree, lines, origin)

    def where(p: str) -> str:
        line = lines.get(p)
        if isinstance(line, str):
            return line
        return f"{origin}:{line}" if line else origin

    config.validate(where)
    return config


def save_config(config, path: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(config.to_yaml())
    return path


def config_from_dict(data: dict, cls=None):
    cls = cls or recipe_configs()[data.get("recipe", "retrieval")]
    config = _build(cls, json.loads(json.dumps(data)), {}, "<dict>")
    config.validate()
    return config
