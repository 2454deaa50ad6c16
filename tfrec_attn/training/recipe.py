"""What the training engine needs from a model: a recipe.

The engine (:class:`tfrec_attn.training.engine.Trainer`) owns the loop — strategy,
compile, callbacks, checkpoints, resume, curves, TensorBoard, the wall-clock budget,
selection, refit and reporting. A recipe owns everything that is particular to one kind
of model. A new model is a new recipe, never a copy of the loop::

    class MyRecipe(Recipe):
        name = "ranking"
        metric_names = ("val_auc",)
        selection_metric = "val_auc"

        def prepare(self, output_dir): ...            # vocabularies, counts; write if output_dir
        def build_model(self, static_shapes): ...     # called inside strategy.scope()
        def dataset(self, input_context, include_validation, repeat): ...
        def validation_metrics(self, model): ...      # {"val_auc": 0.81}, on the chief
        def test_metrics(self, model): ...
        def export(self, model, base_path, **options): ...   # [the SavedModel directories]
        def finish(self, model, run, verbose): ...    # optional: what is fitted after training

        @classmethod
        def restore(cls, config, run, dataset=None, split=None): ...  # from a finished run's files

Each recipe registers itself under its config's ``recipe:`` name (``@register_recipe``), and
:func:`tfrec_attn.training.train` trains whichever recipe a config names.
"""

from __future__ import annotations

import math

from tfrec_attn.config import ConfigError, recipe_names

_RECIPES: dict[str, type] = {}


def register_recipe(name: str):
    """Class decorator: the recipe that trains configs whose ``recipe`` is ``name`` (a name the
    config registry knows, :func:`tfrec_attn.config.register_config`)."""

    def register(cls):
        if name not in recipe_names():
            raise ValueError(f"recipe {name!r} has no registered config; known: {', '.join(recipe_names())}")
        _RECIPES[name] = cls
        cls.name = name
        return cls

    return register


def recipe_class(name: str, where: str = "recipe") -> type:
    """The recipe registered under ``name``; a :class:`ConfigError` naming ``where`` (the
    value's origin) and the trainable recipes otherwise."""
    import tfrec_attn.training  # noqa: F401  (imports, and so registers, every recipe)

    if name not in _RECIPES:
        hint = "; the main job's config runs with `tfrec-attn run --config FILE`" if name == "pipeline" else ""
        raise ConfigError(f"{where}: recipe={name!r} is not trained by `tfrec-attn train` (trainable: "
                          f"{', '.join(sorted(_RECIPES))}){hint}")
    return _RECIPES[name]


class Recipe:
    """Base class of the engine's recipes (see the module docstring).

    Attributes:
        name: str. Names the model in logs and exports.
        metric_names: tuple of str. Log names that :meth:`validation_metrics` returns.
        selection_metric: str. The one of them that picks the epoch (ModelCheckpoint,
            EarlyStopping).
        selection_mode: str. ``max`` or ``min``.
    """

    name = "model"
    metric_names: tuple[str, ...] = ()
    selection_metric = ""
    selection_mode = "max"

    def prepare(self, run) -> None:
        """Builds what the model needs from the data (vocabularies, counts); writes its files
        into ``run`` (a :class:`~tfrec_attn.training.run_dir.RunDirectory`) unless None (a
        non-chief worker)."""
        raise NotImplementedError

    @classmethod
    def restore(cls, config, run, dataset=None, split=None):
        """The recipe of a finished run, from its files (vocabularies) instead of the data:
        enough to export and, with ``dataset`` or ``split``, to evaluate its model."""
        raise NotImplementedError

    def build_model(self, static_shapes: bool = False):
        """A new model (a :class:`tfrec_attn.models.RecommenderModel`) with its weights created.
        The engine calls it inside ``strategy.scope()``, then compiles it."""
        raise NotImplementedError

    def dataset(self, input_context, include_validation: bool = False, repeat: bool = True):
        """The training ``tf.data.Dataset`` of this input pipeline: sharded by
        ``input_context``, batched at its per-replica batch size, endless with ``repeat``
        (the engine cuts it into epochs of ``ceil(num_examples / global batch)`` steps)."""
        raise NotImplementedError

    def num_examples(self, include_validation: bool = False) -> int:
        """Training examples per epoch (throughput figures; steps of repeated datasets)."""
        raise NotImplementedError

    def steps_per_epoch(self, global_batch_size: int, include_validation: bool = False) -> int:
        """Training steps an epoch has (the engine cuts the endless dataset into epochs with it):
        one pass over :meth:`num_examples` by default."""
        return max(1, math.ceil(self.num_examples(include_validation) / global_batch_size))

    def validation_metrics(self, model) -> dict[str, float]:
        """``{name: value}`` for every name in :attr:`metric_names` (run on the chief)."""
        raise NotImplementedError

    def test_metrics(self, model) -> dict[str, float]:
        """The final report's metrics on the test split."""
        raise NotImplementedError

    def summary(self, metrics: dict) -> str:
        """What ``tfrec-attn train`` prints of a finished run's ``metrics``: the selected
        epoch, then the recipe's test figures."""
        selected = metrics["validation"].get(self.selection_metric, float("nan"))
        return (f"trained {metrics['epochs']} epochs in {metrics['train_seconds']:.0f}s; selected epoch "
                f"{metrics['best_epoch']} ({self.selection_metric} {selected:.4f})")

    def tracking_metrics(self, model) -> dict[str, float]:
        """Optional per-epoch test metrics (``test_*``) for reporting curves only."""
        return {}

    def finish(self, model, run, verbose: int = 0) -> None:
        """After selection and refit, before the report (chief only): fits what is fitted on
        the final model (the retrieval recipe's interest profile) and writes it into ``run``;
        says so when ``verbose``."""

    def export(self, model, base_path: str, **options) -> list[str]:
        """Writes the serving exports under ``base_path`` (TF Serving's
        ``BASE/<model_name>/<version>/``) with the config's ``export`` settings, ``options``
        overriding them; returns the version directories written."""
        raise NotImplementedError
