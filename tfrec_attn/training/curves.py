"""Training-curve figure of a run (PNG), drawn from its epoch log."""

from __future__ import annotations

import csv


def _read_csv(path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(r[key]) if r.get(key) not in (None, "") else float("nan") for r in rows]
            for key in (rows[0].keys() if rows else [])}


def plot_training_curves(history_csv: str, path: str, title: str = "") -> str:
    """Loss and the validation metrics per epoch, plus the main one against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = _read_csv(history_csv)
    epochs = [e + 1 for e in h.get("epoch", range(len(h.get("loss", []))))]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, h.get("loss", []), color="#4C72B0")
    axes[0].set(xlabel="epoch", ylabel="training loss", title="loss")
    # Every validation metric the recipe logs (retrieval: NDCG/HR; ranking: + AUC, RMSE; rating: RMSE/MAE).
    names = {"val_ndcg10": "val NDCG@10", "val_hr10": "val HR@10", "val_hr50": "val HR@50", "val_mrr": "val MRR",
             "val_auc": "val AUC", "val_rmse": "val RMSE", "val_mae": "val MAE",
             "test_ndcg10": "test NDCG@10 (report only)"}
    plotted = [key for key in names if key in h]
    for key in plotted:
        axes[1].plot(epochs, h[key], label=names[key])
    axes[1].set(xlabel="epoch", title="validation metrics")
    if plotted:
        axes[1].legend(fontsize=8)
    over_time = next((key for key in ("val_ndcg10", "val_rmse", "val_auc") if key in h), None)
    if "elapsed" in h and over_time:
        axes[2].plot(h["elapsed"], h[over_time], marker=".", label=names[over_time])
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
