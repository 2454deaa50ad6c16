"""Matplotlib figures (training curves); written as PNG files, viewable anywhere."""

from __future__ import annotations

import csv


def _read_csv(path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]
            for key in (rows[0].keys() if rows else [])}


def plot_training_curves(history_csv: str, path: str, title: str = "") -> str:
    """Loss and validation NDCG@10/HR@10 per epoch, plus NDCG@10 against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = _read_csv(history_csv)
    epochs = [e + 1 for e in h.get("epoch", range(len(h.get("loss", []))))]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, h.get("loss", []), color="#4C72B0")
    axes[0].set(xlabel="epoch", ylabel="training loss", title="loss")
    for key, label in (("val_ndcg10", "val NDCG@10"), ("val_hr10", "val HR@10"),
                       ("test_ndcg10", "test NDCG@10 (report only)")):
        if key in h:
            axes[1].plot(epochs, h[key], label=label)
    axes[1].set(xlabel="epoch", title="full-ranking metrics")
    axes[1].legend(fontsize=8)
    if "elapsed" in h and "val_ndcg10" in h:
        axes[2].plot(h["elapsed"], h["val_ndcg10"], marker=".", label="val NDCG@10")
        if "test_ndcg10" in h:
            axes[2].plot(h["elapsed"], h["test_ndcg10"], marker=".", label="test NDCG@10")
        axes[2].set(xlabel="wall time (s)", title="time to quality")
        axes[2].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_attention(model, vocabulary, history, dataset, path: str, last: int = 25) -> str:
    """Heatmap of the user tower's self-attention (last block, mean over heads) among the
    user's ``last`` most recent items, the whole history being encoded; row t = what
    position t attends to (rows need not sum to 1: older items are off the plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import tensorflow as tf

    from tfrec_attn.models import compact_history

    ids = vocabulary.lookup_layer()(tf.constant([list(history)]))
    compact = compact_history(ids, model.max_len)
    _, attention = model.encode(compact, return_attention=True)
    length = int(np.sum(compact.numpy()[0] >= 2))
    n = min(last, length)
    # The full (up to max_len) history is encoded; the plot shows its newest n x n corner.
    weights = tf.reduce_mean(tf.cast(attention[-1], tf.float32), axis=1)[0].numpy()
    weights = weights[length - n: length, length - n: length]
    known = [i for i in history if i in set(vocabulary.item_ids)][-length:]
    titles = [dataset.item_title(i)[:28] for i in known][-n:]
    fig, ax = plt.subplots(figsize=(0.36 * n + 3, 0.36 * n + 2))
    image = ax.imshow(weights, cmap="viridis")
    ax.set_xticks(range(n), titles, rotation=90, fontsize=7)
    ax.set_yticks(range(n), titles, fontsize=7)
    ax.set_xlabel("attended history item (oldest → newest)")
    ax.set_ylabel("position (query)")
    ax.set_title("User-tower self-attention, last block (causal)")
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
