"""Descriptive statistics of a data set and its split (``tfrec-attn data stats``)."""

from __future__ import annotations

import numpy as np

from tfrec_attn.data.dataset import Dataset
from tfrec_attn.data.splits import LeaveOneOutSplit


def describe(dataset: Dataset, split: LeaveOneOutSplit) -> dict:
    lengths = np.array([len(s) for s in split.sequences])
    ratings = dataset.interactions.ratings
    stats = {
        "dataset": dataset.name,
        "source": dataset.source,
        **split.counts(),
        "sparsity": 1.0 - len(dataset.interactions) / (split.num_users * split.num_items),
        "items_with_metadata": sum(1 for i in split.item_vocab if i in dataset.items),
        "sequence_length": {
            "min": int(lengths.min()), "median": float(np.median(lengths)),
            "mean": float(lengths.mean()), "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
        },
        "has_ratings": bool(np.isfinite(ratings).any()),
        "skipped_lines": dataset.skipped.count,
    }
    return stats


def format_stats(stats: dict) -> str:
    seq = stats["sequence_length"]
    return "\n".join([
        f"dataset            {stats['dataset']}  ({stats['source']})",
        f"users              {stats['users']:,}",
        f"items              {stats['items']:,}  ({stats['items_with_metadata']:,} with metadata)",
        f"interactions       {stats['interactions']:,}",
        f"sparsity           {stats['sparsity']:.4%}",
        f"sequence length    min {seq['min']}  median {seq['median']:.0f}  mean {seq['mean']:.1f}  "
        f"p90 {seq['p90']:.0f}  max {seq['max']}",
        f"evaluated users    {stats['evaluated_users']:,}",
        f"train rows         {stats['train_rows']:,}",
        f"validation/test    {stats['validation_targets']:,} / {stats['test_targets']:,} targets",
        f"skipped lines      {stats['skipped_lines']}",
    ])


def plot_lengths(split: LeaveOneOutSplit, path: str, title: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = np.array([len(s) for s in split.sequences])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.unique(np.geomspace(max(1, lengths.min()), lengths.max() + 1, 40).astype(int))
    ax.hist(lengths, bins=bins, color="#4C72B0", edgecolor="white")
    ax.set_xscale("log")
    ax.set_xlabel("interactions per user (log scale)")
    ax.set_ylabel("users")
    ax.set_title(title or "Sequence length histogram")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
