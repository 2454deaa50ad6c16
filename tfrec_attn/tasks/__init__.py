"""Next-item prediction losses (a task owns the loss; models only call it)."""

from tfrec_attn.tasks.next_item import (
    FullSoftmaxTask,
    InBatchSoftmaxTask,
    SampledSoftmaxTask,
    build_task,
)

__all__ = ["FullSoftmaxTask", "InBatchSoftmaxTask", "SampledSoftmaxTask", "build_task"]
