"""A training run on disk: the one place that knows the run directory's layout.

    RUN/config.yaml              the resolved configuration (its ``recipe`` names the recipe)
    RUN/model.json               the model's Keras config (towers included)
    RUN/vocab/...                the recipe's vocabularies (items.txt, user_features.json)
    RUN/checkpoints/best*        weights with the best validation selection metric
    RUN/checkpoints/final*       the model the run returns and exports (= best, or the
                                 refit on train + validation with train.refit_with_validation)
    RUN/backup/                  BackupAndRestore state while training (resume mid-epoch)
    RUN/history.csv              per-epoch loss, validation metrics, elapsed seconds
    RUN/tensorboard/             TensorBoard logs
    RUN/curves.png               training curves
    RUN/metrics.json             validation (best) and test metrics, timings, throughput
    RUN/export/<name>/<version>/ the SavedModels ``tfrec-attn export RUN`` writes by default

:class:`RunDirectory` names these paths, loads a finished run (config, model, the recipe
restored from its files) and exports it through the recipe's own :meth:`export`, so the
command line, the main job and a script export a run the same way.
"""

from __future__ import annotations

import dataclasses
import os

from tfrec_attn.errors import TfrecAttnError


class RunError(TfrecAttnError, ValueError):
    """A directory is not the (finished) training run a command needs."""


class RunDirectory:
    """The files of one training run (see the module docstring).

    Args:
        path: str. The run directory (``--output-dir`` of ``tfrec-attn train``).
    """

    CONFIG = "config.yaml"
    MODEL = "model.json"
    METRICS = "metrics.json"
    HISTORY = "history.csv"
    CURVES = "curves.png"
    VOCAB = "vocab"
    CHECKPOINTS = "checkpoints"

    def __init__(self, path: str):
        self.path = str(path)

    def __repr__(self) -> str:
        return f"RunDirectory({self.path!r})"

    @classmethod
    def of(cls, run) -> RunDirectory | None:
        """``run`` as a RunDirectory (a path, a RunDirectory, or None)."""
        if run is None or isinstance(run, RunDirectory):
            return run
        return cls(run)

    # -- paths ----------------------------------------------------------------------------
    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def config_file(self) -> str:
        return self.file(self.CONFIG)

    @property
    def model_file(self) -> str:
        return self.file(self.MODEL)

    @property
    def metrics_file(self) -> str:
        return self.file(self.METRICS)

    @property
    def history_file(self) -> str:
        return self.file(self.HISTORY)

    @property
    def curves_file(self) -> str:
        return self.file(self.CURVES)

    @property
    def backup_dir(self) -> str:
        return self.file("backup")

    @property
    def tensorboard_dir(self) -> str:
        return self.file("tensorboard")

    @property
    def checkpoints_dir(self) -> str:
        return self.file(self.CHECKPOINTS)

    @property
    def export_base(self) -> str:
        """Where ``tfrec-attn export RUN`` writes by default (TF Serving's model base paths)."""
        return self.file("export")

    def vocab_file(self, name: str) -> str:
        return self.file(self.VOCAB, name)

    def checkpoint(self, name: str = "final") -> str:
        """The prefix of the ``best`` or ``final`` weights (a TF checkpoint)."""
        return self.file(self.CHECKPOINTS, name)

    def has_checkpoint(self, name: str) -> bool:
        return os.path.isfile(self.checkpoint(name) + ".index")

    # -- a finished run -------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """A run whose model was written (``model.json``: after selection, refit and report)."""
        return os.path.isfile(self.model_file)

    def require_finished(self, what: str = "run directory") -> None:
        if not os.path.isfile(self.config_file):
            raise RunError(f"{what} {self.path}: not a training run (no {self.CONFIG}); train one with "
                           "`tfrec-attn train CONFIG --output-dir DIR`")
        if not self.finished:
            raise RunError(f"{what} {self.path}: not a finished training run (no {self.MODEL}); rerun "
                           "`tfrec-attn train` with this --output-dir to resume it")

    def recipe_name(self) -> str:
        """The ``recipe`` of the saved config, read without validating it."""
        import yaml

        try:
            with open(self.config_file, encoding="utf-8") as handle:
                return str((yaml.safe_load(handle) or {}).get("recipe", "retrieval"))
        except (OSError, yaml.YAMLError, AttributeError) as error:
            raise RunError(f"{self.config_file}: cannot read the run's config: {error}") from None

    def save_config(self, config) -> str:
        from tfrec_attn.config import save_config

        os.makedirs(self.path, exist_ok=True)
        return save_config(config, self.config_file)

    def load_config(self):
        from tfrec_attn.config import load_config

        return load_config(self.config_file)

    def save_model_config(self, model) -> str:
        from tfrec_attn.models import save_model_config

        return save_model_config(model, self.model_file)

    def load_model(self, checkpoint: str = "final"):
        """The run's trained model: ``model.json`` rebuilt with the ``checkpoint`` weights."""
        from tfrec_attn.models import model_from_config_file

        self.require_finished()
        model = model_from_config_file(self.model_file)
        model.load_weights(self.checkpoint(checkpoint)).expect_partial()
        return model

    def load(self, dataset=None, split=None) -> TrainResult:
        """The finished run as a :class:`TrainResult`: config, final model, and its recipe
        restored from the run's files (``dataset`` / ``split``: for evaluation; an export
        needs neither)."""
        import json

        from tfrec_attn.training.recipe import recipe_class

        self.require_finished()
        config = self.load_config()
        recipe = recipe_class(config.recipe).restore(config, self, dataset=dataset, split=split)
        metrics = {}
        if os.path.isfile(self.metrics_file):
            with open(self.metrics_file, encoding="utf-8") as handle:
                metrics = json.load(handle)
        return TrainResult(self.load_model(), config, metrics, self.path, recipe)

    def export(self, base_path: str | None = None, **options) -> list[str]:
        """Exports the finished run through its recipe (``options``: the recipe's export
        options, e.g. ``version``, ``model_name``, ``k``); returns the written directories."""
        result = self.load()
        return result.recipe.export(result.model, base_path or self.export_base, **options)


@dataclasses.dataclass
class TrainResult:
    """What :func:`tfrec_attn.training.train` returns: the trained model, its config, its
    metrics, the run directory and the recipe that trained it (vocabularies, split, exports)."""

    model: object
    config: object
    metrics: dict
    output_dir: str
    recipe: object = None

    @property
    def run(self) -> RunDirectory:
        return RunDirectory(self.output_dir)

    @property
    def vocabulary(self):
        return self.recipe.vocabulary

    @property
    def split(self):
        return self.recipe.split

    def export(self, base_path: str | None = None, **options) -> list[str]:
        """The recipe's exports of this model (default base: the run's ``export/``)."""
        return self.recipe.export(self.model, base_path or self.run.export_base, **options)
