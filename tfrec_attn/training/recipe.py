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
        def export(self, model, base_path, **options): ...
"""

from __future__ import annotations


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

    def prepare(self, output_dir: str | None) -> None:
        """Builds what the model needs from the data (vocabularies, counts); writes its files
        under ``output_dir`` unless None (a non-chief worker)."""
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

    def validation_metrics(self, model) -> dict[str, float]:
        """``{name: value}`` for every name in :attr:`metric_names` (run on the chief)."""
        raise NotImplementedError

    def test_metrics(self, model) -> dict[str, float]:
        """The final report's metrics on the test split."""
        raise NotImplementedError

    def tracking_metrics(self, model) -> dict[str, float]:
        """Optional per-epoch test metrics (``test_*``) for reporting curves only."""
        return {}

    def export(self, model, base_path: str, **options) -> str:
        """Writes the serving export; returns its directory."""
        raise NotImplementedError
