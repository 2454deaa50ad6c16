"""The evaluation protocol (leave-one-out, full ranking, ties at expectation) and its
application to in-memory scorers (:class:`Evaluator`) and exported SavedModels
(:mod:`tfrec_attn.evaluation.saved_model`)."""

from tfrec_attn.evaluation.cold_start import ColdStartSplit, cold_start_split, evaluate_cold_start
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
    "ColdStartSplit", "DEFAULT_KS", "Evaluator", "cold_start_split", "evaluate_cold_start", "format_table", "full_ranking_metrics", "rank_counts",
    "sample_negatives", "sampled_metrics", "topk_metrics",
]
