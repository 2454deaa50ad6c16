"""The run report: ``OUTPUT/report.md`` and a self-contained ``OUTPUT/report.html``."""

from __future__ import annotations

import base64
import html
import importlib.metadata
import os
import platform
import time

PACKAGES = ("tfrec_attn", "tensorflow", "tf-keras", "tensorflow-recommenders", "tensorflow-text",
            "tensorflow-serving-api", "scann", "transformers", "implicit", "numpy", "grpcio")
COLUMNS = ("HR@10", "NDCG@10", "HR@50", "MRR")
COLD_COLUMNS = [(part, metric) for part in ("cold", "warm") for metric in ("HR@10", "NDCG@10", "HR@50")]
# the warm targets without the cold items in the catalogue; cold vs warm items' top-10
# appearances per test-target occurrence (1 = new items shown as often as they are wanted)
COLD_EXTRA = ("warm NDCG@10 without cold items", "cold/warm top-10 rate")
HIT = "✓"  # marks the held-out next item among a sample user's recommendations


def hit_rank(sample) -> int | None:
    """The 1-based rank of ``sample``'s held-out next item (``test_target``) among its
    ``recommendations``; None when it is not recommended."""
    for rank, rec in enumerate(sample["recommendations"], start=1):
        if rec["item_id"] == sample["test_target"]:
            return rank
    return None


def because_text(because) -> str:
    """A recommendation's explanations as text: a ``recommend`` model's are the history items
    whose removal lowers the item's score the most (``drop``); a retrieval model's, attention
    x similarity shares (``weight``). With none (no single item's removal lowers the score, or
    no item contributes positively): says so."""
    if not because:
        return "— (no single history item accounts for it)"
    return "; ".join(f"{b['title']} (−{b['drop']:.2f} without it)" if "drop" in b else
                     f"{b['title']} ({b['weight']:+.2f})" for b in because)


def held_out(sample, title: str | None = None) -> str:
    """``held-out next item: TITLE, id ID, a hit at rank R ✓`` (or ``..., not in the top K``).

    Args:
        sample: dict. A sample user of the run summary (``test_target``, ``recommendations``,
            optionally ``test_target_title``).
        title: str or None. The held-out item's title (default: ``test_target_title``,
            else the id alone).
    """
    target = sample["test_target"]
    title = title or sample.get("test_target_title") or target
    rank = hit_rank(sample)
    where = f"a hit at rank {rank} {HIT}" if rank else f"not in the top {len(sample['recommendations'])}"
    return f"held-out next item: {title}{'' if title == target else f', id {target}'}, {where}"


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, str]:
    memory = ""
    try:
        with open("/proc/meminfo") as handle:
            kb = int(handle.readline().split()[1])
        memory = f"{kb / 2**20:.1f} GiB"
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cores": str(os.cpu_count()), "memory": memory}


def _metric_rows(summary):
    rows = []
    for name, metrics in summary["metrics"].items():
        seconds = summary["training_seconds"].get(name)
        rows.append([name] + [f"{metrics[c]:.4f}" if c in metrics else "–" for c in COLUMNS]
                    + [f"{seconds:.1f}" if seconds is not None else "–"])
    return rows


def _cold_rows(cold):
    """Per model: the cold and warm figures, the warm NDCG@10 without the cold items in the
    catalogue, the cold/warm top-10 appearance rate (calibration), training seconds."""
    def extra(r):
        if "calibration" not in r:  # a summary written before these figures existed
            return ["–", "–"]
        return [f"{r['warm_without_cold']['NDCG@10']:.4f}", f"{r['calibration']['cold_to_warm']:.2f}"]

    return [[name] + [f"{r[p][m]:.4f}" for p, m in COLD_COLUMNS] + extra(r)
            + [f"{r.get('seconds', 0):.0f}" if "seconds" in r else "–"] for name, r in cold["rows"].items()]


def _cold_text(cold) -> tuple[str, str]:
    s = cold["split"]
    intro = (f"Cold items: the {s['cold_items']} distinct test targets of a seeded 20% of the evaluated users; "
             f"every interaction with them ({s['removed_interactions']:,}) was removed from training, validation "
             f"and histories, so the models know them only by their text. Cold: the {s['cold_users']} test "
             f"events whose target is cold (ranked over the whole catalogue); warm: the other "
             f"{s['warm_users']} users. The main retrieval model's config trained again on this split within "
             f"the stage's time budget: the same code as the served model.")
    combination = cold.get("combination")
    if combination:
        intro += (f" One model: known items score the id part + {combination['text_weight']:g} × the text part; "
                  f"a new item scores {combination['new_item_scale']:g} × its text score "
                  f"{combination['new_item_offset']:+.2f}, the offset set on a pseudo-cold validation split"
                  + (" (its items held out of a copy of the text part, so that they score as new items do)"
                     if cold.get("new_item_calibration") == "held_out" else "")
                  + " so that new items appear in top-10 lists as often, per wanted item, as known ones (the last "
                  "column: 1 = calibrated).")
    new = cold.get("new_item")
    outro = ""
    if new:
        nearest = "; ".join(f"{n['title']} ({n['cosine']:.2f})" for n in new["nearest"])
        outro = (f"New item **{new['text']}** (id {new['item_id']}), added with `tfrec-attn index add-items` to "
                 f"`{new.get('model', 'retrieval')}` (the served model, trained on the full data) as version "
                 f"{new['version']} of the running server ({new['seconds_to_served']:.1f} s, no retraining). "
                 f"Nearest catalogue items (by text): {nearest}. It is now in the top 10 of "
                 f"{len(new['users_reached'])} of {new['users_asked']} test users asked over gRPC.")
    return intro, outro


def _two_stage_rows(two):
    """[name, HR@10, NDCG@10, HR@50, MRR] rows: retrieval only, ranker only, two-stage
    (:func:`tfrec_attn.evaluation.two_stage.comparison_rows`, in the summary)."""
    return [[name] + [f"{row[c]:.4f}" if c in row else "–" for c in COLUMNS]
            for name, row in (two.get("rows") or {}).items()]


def _two_stage_text(two) -> str:
    m = two["metrics"]
    k = two["candidates"]
    gain = m["NDCG@10"] / m["retrieval_NDCG@10"] if m.get("retrieval_NDCG@10") else float("nan")
    return (f"The {two['attention'].upper()} ranker re-orders the retrieval model's top {k} candidates by its "
            f"score + {m['retrieval_weight']:g} × the retrieval score (the weight chosen on validation). "
            f"Two-stage NDCG@10 = {gain:.3f} × retrieval-only; candidate recall@{k} "
            f"{m.get(f'recall@{k}', float('nan')):.3f} (the two-stage HR ceiling); ranker AUC vs 100 sampled "
            f"negatives {m.get('AUC', float('nan')):.4f}. Best epoch {two['best_epoch']} of {two['epochs']} "
            f"({two['train_seconds']:.0f} s).")


def _rated_by(sample) -> str:
    """``; ratings by `rating``` when another served model than the sample's gave its ratings."""
    source = sample.get("rating_model")
    return f"; ratings by `{source}`" if source and source != sample.get("model") else ""


def _rating_rows(two):
    return [[name, f"{r['RMSE']:.4f}", f"{r['MAE']:.4f}", str(r.get("count", ""))]
            for name, r in (two.get("ratings") or {}).items()]


def _markdown(summary, images) -> str:
    d = summary["dataset"]
    lines = [f"# tfrec_attn report — {d['dataset']}", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M')}; total wall time {summary['total_seconds']:.0f} s"
             + (" (quick profile, user subset)" if summary["quick"] else "") + ".", "",
             "## Data", "",
             f"{d['users']:,} users, {d['items']:,} items, {d['interactions']:,} interactions "
             f"(sparsity {d['sparsity']:.2%}); {d['evaluated_users']:,} evaluated users, "
             f"{d['train_rows']:,} training rows.", "",
             "## Test metrics (full ranking over the catalogue, history excluded)", "",
             "| model | " + " | ".join(COLUMNS) + " | training s |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in _metric_rows(summary)]
    lines += ["", f"Transformer retrieval: best epoch {summary['best_epoch']} of {summary['epochs']}.", ""]
    two = summary.get("two_stage")
    if two:
        lines += ["## Retrieval only vs two-stage (retrieval + attention ranking)", "", _two_stage_text(two), "",
                  "| model | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in _two_stage_rows(two)]
        lines += ["", "### Rating prediction (test events)", "", "| model | RMSE | MAE | events |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in _rating_rows(two)]
        lines.append("")
    for title, name in (("Training curves", "curves"),
                        ("Target attention: recommended items × history (ranking model, one user)",
                         "target_attention"),
                        ("User-tower self-attention (retrieval, one user)", "attention"),
                        ("Interactions per user", "lengths")):
        if images.get(name):
            lines += [f"## {title}", "", f"![{title}]({os.path.basename(images[name])})", ""]
    cold = summary.get("cold_start")
    if cold:
        intro, outro = _cold_text(cold)
        lines += ["## Cold start: items known only by their text", "", intro, "",
                  "| model | " + " | ".join(f"{p} {m}" for p, m in COLD_COLUMNS) + " | "
                  + " | ".join(COLD_EXTRA) + " | training s |",
                  "|---" * (len(COLD_COLUMNS) + len(COLD_EXTRA) + 2) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in _cold_rows(cold)]
        lines += ["", outro, ""]
        for r in (cold.get("new_item") or {}).get("users_reached", [])[:5]:
            lines.append(f"- user {r['user_id']}: rank {r['rank']}; recently watched {'; '.join(r['recent'])}")
        lines.append("")
    lines += ["## Sample recommendations (through the gRPC server)", "",
              f"{HIT} marks the user's held-out next item (the test target) where it is recommended.", ""]
    for sample in summary["samples"]:
        lines += [f"**User {sample['user_id']}** ({len(sample['history'])} items; {held_out(sample)}; "
                  f"model `{sample.get('model', 'retrieval')}`{_rated_by(sample)})", "",
                  "| # | item | score | predicted rating | because (history item, score drop without it) |",
                  "|---|---|---|---|---|"]
        hit = hit_rank(sample)
        for rank, rec in enumerate(sample["recommendations"], start=1):
            because = because_text(rec["because"])
            rating = f"{rec['rating']:.2f}" if rec.get("rating") is not None else "–"
            item = f"**{rec['title']}** {HIT}" if rank == hit else rec["title"]
            lines.append(f"| {rank} | {item} | {rec['score']:.3f} | {rating} | {because} |")
        lines.append("")
    lines += ["## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in summary["stage_seconds"].items()]
    lines += ["", "## Environment", "", "| package | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in versions().items()]
    lines += [""] + [f"- {k}: {v}" for k, v in machine().items()]
    return "\n".join(lines) + "\n"


def _html(summary, images) -> str:
    def img(path):
        if not path or not os.path.isfile(path):
            return ""
        with open(path, "rb") as handle:
            data = base64.b64encode(handle.read()).decode()
        return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'

    e = html.escape
    d = summary["dataset"]
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _metric_rows(summary))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tfrec_attn report</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "th{background:#f3f3f3}.num td:not(:first-child){text-align:right}"
        ".hit{background:#e3f5e1;font-weight:600}</style></head><body>",
        f"<h1>tfrec_attn report — {e(d['dataset'])}</h1>",
        f"<p>Generated {time.strftime('%Y-%m-%d %H:%M')}; total wall time {summary['total_seconds']:.0f} s"
        f"{' (quick profile, user subset)' if summary['quick'] else ''}.</p>",
        f"<p>{d['users']:,} users, {d['items']:,} items, {d['interactions']:,} interactions; "
        f"{d['evaluated_users']:,} evaluated users.</p>",
        "<h2>Test metrics</h2><p>Full ranking over the catalogue, the user's history excluded, ties at "
        "their expected value.</p>",
        "<table class='num'><tr><th>model</th>" + "".join(f"<th>{c}</th>" for c in COLUMNS)
        + "<th>training s</th></tr>" + rows + "</table>",
    ]
    two = summary.get("two_stage")
    if two:
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _two_stage_rows(two))
        ratings = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _rating_rows(two))
        parts += ["<h2>Retrieval only vs two-stage (retrieval + attention ranking)</h2>",
                  f"<p>{e(_two_stage_text(two))}</p>",
                  "<table class='num'><tr><th>model</th>" + "".join(f"<th>{c}</th>" for c in COLUMNS) + "</tr>"
                  + body + "</table>",
                  "<h3>Rating prediction (test events)</h3><table class='num'><tr><th>model</th><th>RMSE</th>"
                  "<th>MAE</th><th>events</th></tr>" + ratings + "</table>"]
    parts += [
        "<h2>Training curves</h2>" + img(images.get("curves")),
    ]
    if images.get("target_attention"):
        parts.append("<h2>Target attention: recommended items × history (ranking model, one user)</h2>"
                     + img(images.get("target_attention")))
    parts.append("<h2>User-tower self-attention (retrieval, one user)</h2>" + img(images.get("attention")))
    cold = summary.get("cold_start")
    if cold:
        intro, outro = _cold_text(cold)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _cold_rows(cold))
        parts += ["<h2>Cold start: items known only by their text</h2>", f"<p>{e(intro)}</p>",
                  "<table class='num'><tr><th>model</th>" + "".join(f"<th>{p} {m}</th>" for p, m in COLD_COLUMNS)
                  + "".join(f"<th>{e(c)}</th>" for c in COLD_EXTRA) + "<th>training s</th></tr>" + body + "</table>",
                  f"<p>{e(outro).replace('**', '')}</p>"]
        reached = (cold.get("new_item") or {}).get("users_reached", [])[:5]
        if reached:
            parts.append("<ul>" + "".join(f"<li>user {e(r['user_id'])}: rank {r['rank']}; recently watched "
                                          f"{e('; '.join(r['recent']))}</li>" for r in reached) + "</ul>")
    parts.append("<h2>Sample recommendations (through the gRPC server)</h2>"
                 f"<p><span class='hit'>{HIT} highlighted</span>: the user's held-out next item (the test "
                 "target) where it is recommended.</p>")
    for sample in summary["samples"]:
        parts.append(f"<h3>User {e(sample['user_id'])}</h3><p>{len(sample['history'])} items watched; "
                     f"{e(held_out(sample))}; model {e(sample.get('model', 'retrieval'))}"
                     f"{e(_rated_by(sample).replace('`', ''))}</p>"
                     "<table><tr><th>#</th><th>item</th><th>score</th><th>predicted rating</th><th>because</th></tr>")
        hit = hit_rank(sample)
        for rank, rec in enumerate(sample["recommendations"], start=1):
            because = e(because_text(rec["because"]))
            rating = f"{rec['rating']:.2f}" if rec.get("rating") is not None else "–"
            row, item = ("<tr class='hit'>", f"{e(rec['title'])} {HIT}") if rank == hit else ("<tr>", e(rec["title"]))
            parts.append(f"{row}<td>{rank}</td><td>{item}</td><td>{rec['score']:.3f}</td>"
                         f"<td>{rating}</td><td>{because}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Interactions per user</h2>" + img(images.get("lengths")))
    parts.append("<h2>Stages</h2><table>" + "".join(f"<tr><td>{e(k)}</td><td>{v:.1f} s</td></tr>"
                                                   for k, v in summary["stage_seconds"].items()) + "</table>")
    parts.append("<h2>Environment</h2><table>" + "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>"
                                                       for k, v in {**versions(), **machine()}.items()) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(output_dir: str, summary: dict, **images) -> str:
    """Writes report.md (next to the PNGs) and report.html (PNGs embedded); returns the HTML path."""
    import shutil

    local = {}
    for name, path in images.items():
        if path and os.path.isfile(path):
            target = os.path.join(output_dir, os.path.basename(path))
            if os.path.abspath(path) != os.path.abspath(target):
                shutil.copyfile(path, target)
            local[name] = target
    with open(os.path.join(output_dir, "report.md"), "w", encoding="utf-8") as handle:
        handle.write(_markdown(summary, local))
    path = os.path.join(output_dir, "report.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(_html(summary, local))
    return path
