"""Matplotlib figures of the application (attention heatmap); written as PNG files."""

from __future__ import annotations


def plot_attention(model, vocabulary, history, dataset, path: str, last: int = 25) -> str:
    """Heatmap of the user tower's self-attention (last block, mean over heads) among the
    user's ``last`` most recent items, the whole history being encoded; row t = what
    position t attends to (rows need not sum to 1: older items are off the plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import tensorflow as tf

    from tfrec_attn.features.vocab import is_item
    from tfrec_attn.models import compact_history

    ids = vocabulary.lookup_layer()(tf.constant([list(history)]))
    compact = compact_history(ids, model.max_len)
    attention = [model.encode(compact)["attention"]]
    length = int(np.sum(is_item(compact.numpy()[0])))
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
