"""The run report and the terminal's sample list: the held-out next item by title, and a
recommendation equal to it marked as a hit (report.md, report.html, ``print_samples``)."""

import html
import re
from types import SimpleNamespace

from tfrec_attn.app.report import HIT, held_out, hit_rank, write_report
from tfrec_attn.app.stages import print_samples

TITLES = {"50": "Star Wars (1977)", "181": "Return of the Jedi (1983)", "7": "Twelve Monkeys (1995)",
          "9": "Dead Man Walking (1995)", "1": "Toy Story (1995)", "2": "GoldenEye (1995)"}


def rec(item_id, score):
    return {"item_id": item_id, "title": TITLES[item_id], "score": score, "rating": 4.2,
            "because": [{"item_id": "1", "title": TITLES["1"], "weight": 0.5}]}


def samples():
    """User 10's held-out item is recommended second (a hit); user 20's is not recommended.
    User 20's sample has no ``test_target_title`` (a summary written before it existed)."""
    return [
        {"user_id": "10", "history": ["1", "2"], "test_target": "181", "test_target_title": TITLES["181"],
         "model": "recommend", "recommendations": [rec("50", 0.9), rec("181", 0.8), rec("7", 0.7)]},
        {"user_id": "20", "history": ["1"], "test_target": "9", "model": "recommend",
         "recommendations": [rec("50", 0.6), rec("7", 0.5), rec("181", 0.4)]},
    ]


def summary():
    return {"dataset": {"dataset": "ml-100k", "users": 2, "items": 6, "interactions": 6, "sparsity": 0.5,
                        "evaluated_users": 2, "train_rows": 2},
            "quick": True, "metrics": {"MostPop": {"HR@10": 0.1, "NDCG@10": 0.05, "HR@50": 0.3, "MRR": 0.04}},
            "training_seconds": {}, "best_epoch": 1, "epochs": 2, "samples": samples(),
            "stage_seconds": {"report": 0.1}, "total_seconds": 1.0}


def test_hit_rank_and_the_held_out_line():
    hit, miss = samples()
    assert hit_rank(hit) == 2 and hit_rank(miss) is None
    assert held_out(hit) == f"held-out next item: Return of the Jedi (1983), id 181, a hit at rank 2 {HIT}"
    assert held_out(miss) == "held-out next item: 9, not in the top 3"  # no title known: the id alone
    assert held_out(miss, TITLES["9"]) == "held-out next item: Dead Man Walking (1995), id 9, not in the top 3"


def test_report_shows_the_held_out_title_and_marks_the_hit(tmp_path):
    write_report(str(tmp_path), summary())
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "held-out next item: Return of the Jedi (1983), id 181, a hit at rank 2" in md
    assert "held-out next item: 9, not in the top 3" in md
    rows = [line for line in md.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 6
    assert rows[1].startswith(f"| 2 | **Return of the Jedi (1983)** {HIT} | 0.800 |")
    assert [r for r in rows if HIT in r] == [rows[1]]  # user 20's list holds no hit
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.escape("held-out next item: Return of the Jedi (1983), id 181, a hit at rank 2") in page
    hits = re.findall(r"<tr class='hit'><td>(\d+)</td><td>([^<]*)</td>", page)
    assert hits == [("2", f"Return of the Jedi (1983) {HIT}")]


def test_print_samples_resolves_the_title_and_marks_the_hit(capsys):
    print_samples(samples(), SimpleNamespace(item_title=lambda item: TITLES.get(item, item)))
    out = capsys.readouterr().out.splitlines()
    assert f"  held-out next item: Return of the Jedi (1983), id 181, a hit at rank 2 {HIT}" in out
    assert "  held-out next item: Dead Man Walking (1995), id 9, not in the top 3" in out
    listed = [line for line in out if re.match(r"^ .\s*\d+\. ", line)]
    assert len(listed) == 6
    assert [line for line in listed if line.startswith(f" {HIT}")] == [listed[1]]
    assert listed[1].startswith(f" {HIT} 2. Return of the Jedi (1983)")
    assert listed[0].startswith("   1. Star Wars (1977)")


def test_explanations_read_as_score_drops_and_an_empty_one_says_so(tmp_path):
    from tfrec_attn.app.report import because_text

    drops = [{"title": "Fargo (1996)", "drop": 0.125}, {"title": "Jumanji (1995)", "drop": 0.01}]
    assert because_text(drops) == "Fargo (1996) (−0.12 without it); Jumanji (1995) (−0.01 without it)"
    assert because_text([{"title": "Fargo (1996)", "weight": 0.5}]) == "Fargo (1996) (+0.50)"
    assert because_text([]) == "— (no single history item accounts for it)"
    # A sample whose ratings come from the served rating model says so; one without, not.
    data = summary()
    data["samples"][0]["rating_model"] = "rating"
    data["samples"][1]["rating_model"] = "recommend"
    write_report(str(tmp_path), data)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.count("; ratings by `rating`") == 1 and "model `recommend`; ratings by `rating`)" in md
    assert "ratings by rating" in (tmp_path / "report.html").read_text(encoding="utf-8")
