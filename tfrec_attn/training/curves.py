"""Training-curve figure of a run (PNG), drawn from its epoch log."""

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
