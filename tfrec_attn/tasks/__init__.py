"""Next-item prediction losses (a task owns the loss; models only call it)."""

from tfrec_attn.tasks.next_item import (
    LOSS_TYPES,
    Candidates,
    FullSoftmaxTask,
    InBatchSoftmaxTask,
    SampledSoftmaxTask,
    build_task,
    global_weighted_mean,
)

__all__ = ["LOSS_TYPES", "Candidates", "FullSoftmaxTask", "InBatchSoftmaxTask", "SampledSoftmaxTask",
           "build_task", "global_weighted_mean"]
