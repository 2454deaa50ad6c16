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


def _short(label: str, width: int) -> str:
    label = str(label)
    return label if len(label) <= width else label[: width - 1] + "…"


def attention_heatmap(weights, row_labels, col_labels, path: str, title: str = "", max_label: int = 28,
                      colorbar_label: str = "attention weight") -> str:
    """Heatmap of signed weights (e.g. candidates × history items of a ranking model's target
    attention) with a diverging colormap centred at 0 and a colorbar; returns ``path``.

    Args:
        weights: float array [rows, cols]. Any sign (DIN's weights are not normalised).
        row_labels: list of str, one per row (e.g. candidate titles).
        col_labels: list of str, one per column (e.g. history titles, oldest → newest).
        path: str. The PNG to write.
        title: str. Figure title.
        max_label: int. Labels longer than this are cut (with "…") so ~50 columns stay readable.
        colorbar_label: str.

    Example:
        >>> attention_heatmap([[0.4, -0.1]], ["Heat (1995)"], ["Alien (1979)", "Fargo (1996)"], "a.png")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"weights of shape {weights.shape} need {weights.shape[0] if weights.ndim else '?'} row "
                         f"labels and {weights.shape[-1] if weights.ndim else '?'} column labels, got "
                         f"{len(row_labels)} and {len(col_labels)}")
    rows, cols = weights.shape
    limit = float(np.max(np.abs(weights))) if weights.size else 0.0
    limit = limit if limit > 0 else 1.0  # all zero: still centred at 0
    label_inches = 0.075 * max_label  # room for the rotated column / the row labels
    fig, ax = plt.subplots(figsize=(max(0.3 * cols, 3.0) + label_inches + 1.8,
                                    max(0.34 * rows, 1.2) + label_inches + 1.0))
    image = ax.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(cols), [_short(c, max_label) for c in col_labels], rotation=90, fontsize=7)
    ax.set_yticks(range(rows), [_short(r, max_label) for r in row_labels], fontsize=7)
    if rows * cols <= 150:  # small maps: the values too
        for (r, c), value in np.ndenumerate(weights):
            ax.text(c, r, f"{value:+.2f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(value) > 0.6 * limit else "black")
    ax.set_xlabel("history item (oldest → newest)")
    ax.set_ylabel("candidate")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02).set_label(colorbar_label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
