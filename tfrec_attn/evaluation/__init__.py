"""The evaluation protocol (leave-one-out, full ranking, ties at expectation) and its
application to in-memory scorers (:class:`Evaluator`) and exported SavedModels
(:mod:`tfrec_attn.evaluation.saved_model`)."""

from tfrec_attn.evaluation.protocol import (
    DEFAULT_KS,
    Evaluator,
    format_table,
    full_ranking_metrics,
    rank_counts,
    sample_negatives,
    sampled_metrics,
    topk_metrics,
)

__all__ = [
    "DEFAULT_KS", "Evaluator", "format_table", "full_ranking_metrics", "rank_counts",
    "sample_negatives", "sampled_metrics", "topk_metrics",
]
