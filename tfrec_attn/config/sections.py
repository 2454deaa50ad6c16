"""What every config is made of: :class:`Section` (a dataclass that validates itself at its
own path), :class:`RunConfig` (a recipe's root config) and the sections every recipe shares,
``data`` and ``train``."""

from __future__ import annotations

import dataclasses

import yaml

from tfrec_attn.config.errors import ConfigError

LR_SCALING = ("none", "linear", "sqrt")
LR_SCHEDULES = ("constant", "cosine")
# tf.distribute strategies the engine builds (tfrec_attn.training.distribute)
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "parameter_server", "tpu")


def one_of(choices) -> str:
    return f"must be one of {', '.join(choices)}"


def get_path(obj, path: str):
    """The value at a dotted ``path`` of a (nested) config."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


class Section:
    """A config section. Subclasses are dataclasses and list their rules in :meth:`checks`;
    :meth:`validate` runs them at the section's own path, then validates every nested section
    (and every section of a list field) at its path, so an error names the whole path wherever the section sits (a retrieval
    run's ``model.item_tower`` or the main job's ``retrieval.model.item_tower``)."""

    def checks(self, at) -> list[tuple[str, bool, str]]:
        """``(field, ok, problem)`` rules; ``at(field)``: the field's whole path (for messages
        that name a sibling)."""
        return []

    def validate(self, where=lambda path: path, prefix: str = "") -> None:
        """Raises :class:`ConfigError` naming the offending value's origin, ``where(path)``."""

        def at(name: str) -> str:
            return f"{prefix}.{name}" if prefix else name

        for name, ok, problem in self.checks(at):
            if not ok:
                raise ConfigError(f"{where(at(name))}: {at(name)}={get_path(self, name)!r} {problem}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Section):
                value.validate(where, at(field.name))
            elif isinstance(value, list):  # a list of sections: each at its index (`serve[1].stage`)
                for i, item in enumerate(value):
                    if isinstance(item, Section):
                        item.validate(where, f"{at(field.name)}[{i}]")


class RunConfig(Section):
    """A recipe's root config (registered under its ``recipe:`` name, see
    :mod:`tfrec_attn.config.registry`): ``recipe``, ``seed``, ``data``, ``train`` and its own
    sections."""

    recipe_name = ""  # set by @register_config

    def checks(self, at):
        return [("recipe", self.recipe == self.recipe_name, f"must be {self.recipe_name}")]

    def validate(self, where=lambda path: path, prefix: str = "") -> None:
        self.where = lambda path: where(f"{prefix}.{path}" if prefix else path)
        super().validate(where, prefix)

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
class DataConfig(Section):
    """Where the data comes from (command-line ``--data`` etc. override these)."""

    dataset: str = "ml-100k"  # MovieLens release, when reading MovieLens
    min_interactions: int = 3  # users with fewer interactions only train
    sequence_files: str = ""  # train from `tfrec-attn data prepare` TFRecords (FILE-sharded)

    def checks(self, at):
        from tfrec_attn.data.movielens import RELEASES

        return [("min_interactions", self.min_interactions >= 3, "must be >= 3"),
                ("dataset", self.dataset in RELEASES, one_of(sorted(RELEASES)))]


@dataclasses.dataclass
class TrainConfig(Section):
    """The engine's training loop (:class:`tfrec_attn.training.Trainer`), shared by every recipe;
    a recipe's subclass changes its defaults."""

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
    strategy: str = "auto"  # STRATEGIES
    backup_every_steps: int = 0  # BackupAndRestore save_freq in steps (0 = a quarter of an epoch)
    peer_timeout_seconds: float = 600.0  # multi-worker: fail if the cluster trains no step by then

    def checks(self, at):
        return [
            ("epochs", self.epochs > 0, "must be > 0"),
            ("batch_size", self.batch_size > 0, "must be > 0"),
            ("learning_rate", self.learning_rate > 0, "must be > 0"),
            ("learning_rate_scaling", self.learning_rate_scaling in LR_SCALING, one_of(LR_SCALING)),
            ("learning_rate_schedule", self.learning_rate_schedule in LR_SCHEDULES, one_of(LR_SCHEDULES)),
            ("warmup_epochs", 0.0 <= self.warmup_epochs < self.epochs, f"must be in [0, {at('epochs')})"),
            ("reference_batch_size", self.reference_batch_size > 0, "must be > 0"),
            ("steps_per_execution", self.steps_per_execution > 0, "must be > 0"),
            ("strategy", self.strategy in STRATEGIES, one_of(STRATEGIES)),
            ("backup_every_steps", self.backup_every_steps >= 0, "must be >= 0 (0 = a quarter of an epoch)"),
            ("peer_timeout_seconds", self.peer_timeout_seconds >= 0, "must be >= 0 (0 = wait forever)"),
            ("eval_every", self.eval_every > 0, "must be > 0"),
            ("weight_averaging", 0.0 <= self.weight_averaging < 1.0, "must be in [0, 1)"),
            ("patience", self.patience > 0, "must be > 0"),
        ]
