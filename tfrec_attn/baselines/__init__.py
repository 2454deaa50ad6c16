"""Non-neural baselines measured with the project's protocol."""

from tfrec_attn.baselines.als import ALSBaseline, ALSNotInstalledError, als_modules
from tfrec_attn.baselines.biased import BiasedBaseline
from tfrec_attn.baselines.content import ContentBaseline
from tfrec_attn.baselines.mostpop import MostPopBaseline

__all__ = ["ALSBaseline", "ALSNotInstalledError", "BiasedBaseline", "ContentBaseline", "MostPopBaseline",
           "run_baselines"]


def run_baselines(split, stage: str = "test", names=("MostPop", "ALS"), als_params=None) -> dict:
    """Fits each baseline on the training part and evaluates it at ``stage``.

    ALS needs the ``als`` extra; without it this raises
    :class:`~tfrec_attn.baselines.als.ALSNotInstalledError` before fitting anything.
    """
    from tfrec_attn.evaluation import Evaluator

    if "ALS" in names:
        als_modules()  # fail before the other baselines' work, not after
    evaluator = Evaluator(split, stage)
    results = {}
    for name in names:
        if name == "MostPop":
            model = MostPopBaseline().fit(split)
        elif name == "ALS":
            model = ALSBaseline(**(als_params or {})).fit(split)
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from MostPop, ALS")
        results[name] = evaluator.evaluate(model.score_fn(split))
    return results
