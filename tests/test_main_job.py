"""The main job end to end (``tfrec-attn run --quick``) and the README's two commands."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from readme_commands import command  # noqa: E402


def test_readme_commands_are_what_ci_and_this_test_run():
    tests = command("tests")
    main = command("main")
    with open(os.path.join(ROOT, ".ci", "run")) as handle:
        ci = handle.read()
    assert 'cmd=$(python3 tools/readme_commands.py tests)' in ci and 'exec bash -c "$cmd"' in ci
    assert tests.startswith("python3 -m venv .venv && .venv/bin/pip install -e") and "pytest" in tests
    assert main.split(" && ")[-1] == ".venv/bin/tfrec-attn run"


# The quick profile made cheaper still: what is asserted below is the stages, the exports, the
# server and the report, none of which needs more users, epochs or time (the exports, the
# server and the text tower's encoder, MiniLM, are what the run spends its time on).
CHEAPER = ["quick.max_users=100", "retrieval.train.epochs=2", "ranking.train.epochs=1",
           "quick.cold_start_budget_seconds=3", "cold_start.users_to_scan=20"]


def test_quick_run_end_to_end(ml100k_dir, tmp_path):
    out = tmp_path / "main"
    run = shlex.split(command("main").split(" && ")[-1])
    run[0] = os.path.join(os.path.dirname(sys.executable), os.path.basename(run[0]))
    proc = subprocess.run(run + ["--quick", "--data", ml100k_dir, "--output-dir", str(out), "--keras-verbose", "0",
                                 *(arg for value in CHEAPER for arg in ("--set", value))],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("prepare data", "baselines", "train retrieval", "train ranking", "train rating", "evaluate",
                  "cold start", "export", "serve", "report"):
        assert re.search(rf"=== \[\d+/10\] {stage}", proc.stdout), stage
    assert "ensemble item tower" in proc.stdout  # one model for known and new items
    assert "the ensemble item tower retrained without them, cold-start protocol" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    # Cold start: the protocol's table (the one model, its parts alone, the baselines; cold and
    # warm figures) and a new item added by its text to the running `retrieval`, the served
    # model, its nearest items being real catalogue items.
    cold = summary["cold_start"]
    assert set(cold["rows"]) >= {"one model (id + text ensemble)", "its id part alone (cold ids are OOV)",
                                 "its text part alone", "content only (MiniLM cosine, no training)", "MostPop"}
    assert cold["rows"]["MostPop"]["cold"]["HR@50"] == 0.0  # cold items have no training counts
    assert cold["rows"]["its id part alone (cold ids are OOV)"]["cold"]["users"] == cold["split"]["cold_users"] > 0
    assert set(cold["combination"]) == {"text_weight", "new_item_scale", "new_item_offset"}
    new = cold["new_item"]
    assert new["version"] == 2 and len(new["nearest"]) == 5 and new["users_asked"] > 0
    assert new["model"] == "retrieval" and os.path.isdir(out / "export" / "retrieval" / "2")
    assert sorted(os.listdir(out / "export")) == ["models.config", "ranking", "rating", "recommend", "retrieval"]
    assert "Star Wars" in new["text"] and "Cold start: items known only by their text" in (out / "report.md").read_text()
    # The report has a number for every model and every metric.
    report = (out / "report.md").read_text()
    for model in ("MostPop", "ALS", "Transformer retrieval"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {model} |"))
        cells = [c.strip() for c in row.strip("|").split("|")][1:]
        assert all(re.fullmatch(r"\d+\.\d+", c) for c in cells), row
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "Transformer retrieval" in html
    # Recommendations came back through gRPC: real catalogue items, never the user's history.
    catalogue = set((out / "retrieval" / "vocab" / "items.txt").read_text().split("\n")) - {""}
    assert len(summary["samples"]) == 3
    for sample in summary["samples"]:
        items = [r["item_id"] for r in sample["recommendations"]]
        assert len(items) == 10 and set(items) <= catalogue
        assert not set(items) & set(sample["history"])
    assert os.path.isdir(out / "export" / "retrieval" / "1")
    # Two-stage: the recommend model answered over gRPC with ratings and explanations from the
    # ranker's target attention (history items only); the report compares both stages.
    two = summary["two_stage"]
    assert {"NDCG@10", "retrieval_NDCG@10", "AUC", "RMSE", "recall@100"} <= set(two["metrics"])
    assert set(two["ratings"]) >= {"biased baseline (mean + user + item bias)", "attention ranker (rating head)",
                                   "kernel autoencoder (GLocal-K)"}
    # The rating model: on the same test events as the ranker's head and the baseline.
    rating = summary["rating"]
    assert rating["metrics"]["count"] == two["ratings"]["biased baseline (mean + user + item bias)"]["count"]
    assert rating["metrics"]["baseline_RMSE"] == pytest.approx(two["metrics"]["baseline_RMSE"], rel=1e-6)
    assert two["ratings"]["kernel autoencoder (GLocal-K)"]["RMSE"] == rating["metrics"]["RMSE"]
    assert "| kernel autoencoder (GLocal-K) |" in report and "model `recommend`; ratings by `rating`)" in report
    # The ratings shown are the served rating model's (GLocal-K, over gRPC): its completed matrix's
    # entries for the user, not the ranker head's.
    import tensorflow as tf

    served = tf.saved_model.load(str(out / "export" / "rating" / "1"))
    for sample in summary["samples"]:
        assert sample["model"] == "recommend" and sample["rating_model"] == "rating"
        items = [rec["item_id"] for rec in sample["recommendations"]]
        expected = served.signatures["serving_default"](user_id=tf.constant([sample["user_id"]] * len(items)),
                                                        item_id=tf.constant(items))
        assert bool(tf.reduce_all(expected["known_user"]))
        assert [rec["rating"] for rec in sample["recommendations"]] == pytest.approx(
            expected["rating"].numpy().tolist(), abs=1e-5)
        assert any(rec["rating"] != pytest.approx(rec["ranker_rating"], abs=1e-3) for rec in sample["recommendations"])
        for rec in sample["recommendations"]:
            assert 1.0 <= rec["rating"] <= 5.0 and 1.0 <= rec["ranker_rating"] <= 5.0
            # because: history items only, each with the score drop its removal causes (an item
            # whose score no removal lowers has none)
            assert {b["item_id"] for b in rec["because"]} <= set(sample["history"])
            assert all(b["drop"] > 0 for b in rec["because"])
    assert any(rec["because"] for sample in summary["samples"] for rec in sample["recommendations"])
    assert os.path.isdir(out / "export" / "ranking" / "1") and os.path.isdir(out / "export" / "recommend" / "1")
    assert "Retrieval only vs two-stage" in report and "Rating prediction" in report
    assert (out / "target_attention.png").stat().st_size > 10_000
    # The server process is gone and exited cleanly.
    assert summary["server_exit_code"] == 0
    try:
        os.kill(summary["server_pid"], 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
