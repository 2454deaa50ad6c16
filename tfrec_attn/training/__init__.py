"""The training engine: one Keras trainer for every model recipe, under any tf.distribute
strategy, with the project's callbacks, checkpoints, curves and resume.

    >>> result = train(load_config("training/configs/ml100k_ranking.yaml"), dataset, "runs/ranking")
    >>> result.export()            # runs/ranking/export/ranking/1, .../recommend/1
    >>> RunDirectory("runs/ranking").export(version=2)   # the same, later, from the files

:func:`train` trains the recipe a config's ``recipe`` names (``retrieval``, ``ranking``,
``rating``, ``kernel_autoencoder``; each registered by its module with ``@register_recipe``).
"""

from tfrec_attn.training.engine import Trainer
from tfrec_attn.training.ranking import RankingRecipe
from tfrec_attn.training.rating import RatingRecipe
from tfrec_attn.training.rating_autoencoder import KernelAutoencoderRecipe
from tfrec_attn.training.recipe import Recipe, recipe_class, register_recipe
from tfrec_attn.training.retrieval import RetrievalRecipe
from tfrec_attn.training.run_dir import RunDirectory, RunError, TrainResult


def train(config, dataset=None, output_dir: str = "runs/run", *, split=None, verbose: int = 1,
          evaluate_test: bool = True, track_test: bool = False, strategy=None, **recipe_options) -> TrainResult:
    """Trains ``config``'s recipe with the engine (selection, optional refit, report).

    Args:
        config: a registered root config (:func:`tfrec_attn.config.load_config`).
        dataset: Dataset. What the recipe splits (or reads item texts and user features from).
        output_dir: str. The run directory (an interrupted run there resumes).
        split: the split to train, select and report on (default: the recipe's split of
            ``dataset``: leave-one-out, or the rating recipe's ``split.fold``).
        verbose: Keras progress bar verbosity.
        evaluate_test: report test metrics.
        track_test: also log test metrics per epoch (curves only; selection uses validation).
        strategy: a tf.distribute.Strategy (default: ``train.strategy``).
        recipe_options: the recipe's own arguments (the ranking recipe: ``retrieval`` and
            ``selection_retrieval``, in-memory retrievers).

    Returns:
        TrainResult with ``model``, ``config``, ``metrics``, ``output_dir`` and ``recipe``.
    """
    if config.recipe == "retrieval":
        from tfrec_attn.training.retrieval import without_item_text

        config = without_item_text(config, dataset)
    if config.recipe == "retrieval" and config.model.item_tower.type == "ensemble":  # two models, combined
        from tfrec_attn.training.ensemble import train_ensemble

        return train_ensemble(config, dataset, output_dir, split=split, verbose=verbose, evaluate_test=evaluate_test,
                              track_test=track_test, strategy=strategy)
    recipe = recipe_class(config.recipe, config.origin("recipe"))(config, dataset, split=split, **recipe_options)
    return Trainer(recipe, config, output_dir, verbose=verbose, track_test=track_test,
                   strategy=strategy).run(evaluate_test=evaluate_test)


__all__ = ["KernelAutoencoderRecipe", "RankingRecipe", "RatingRecipe", "Recipe", "RetrievalRecipe", "RunDirectory", "RunError", "TrainResult",
           "Trainer", "recipe_class", "register_recipe", "train"]
