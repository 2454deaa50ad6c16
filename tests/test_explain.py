"""`tfrec-attn explain`: a ranking export's scores and target attention, read through its
signatures (checked against the signatures themselves), the heatmap, and the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

MAX_LEN = 6  # the ranker's (conftest's tiny_ranking)
# 9 known items (the 3 oldest are beyond max_len), padding and an unknown id.
HISTORY = ["i3", "i7", "", "i5", "nope", "i9", "i11", "i3", "i13", "i15", "i17"]
CANDIDATES = ["i1", "i2", "zz", "i20", "i21", "i22"]


@pytest.fixture(scope="module")
def exports(tiny_ranking, tiny_recommend):
    """Ranking and recommend exports of a seeded DIN ranker over the tiny catalogue, whose
    attention scorer is re-drawn so that the weights take both signs (conftest's ``tiny_ranking``)."""
    return tiny_ranking.base, tiny_ranking.ranking, tiny_recommend


@pytest.fixture(scope="module")
def explained(exports):
    from tfrec_attn.app.explain import RankingExplainer

    explainer = RankingExplainer(os.path.dirname(exports[1]))  # the model base path: its newest version
    return explainer, explainer.explain(HISTORY, CANDIDATES, titles={"i1": "One (1995)", "i7": "Seven (1995)"})


def test_order_and_values_are_the_signatures(exports, explained):
    _, result = explained
    assert result.model_path == exports[1]
    loaded = tf.saved_model.load(exports[1])
    inputs = {"history": tf.constant([HISTORY]), "candidates": tf.constant([CANDIDATES])}
    attention = loaded.signatures["explain"](**inputs)["attention"].numpy()[0]
    scored = loaded.signatures["serving_default"](**inputs)
    scores, rating = scored["scores"].numpy()[0], scored["rating"].numpy()[0]

    # Known candidates (not "zz"), best score first, with the signature's score and rating.
    known = [c for c in range(len(CANDIDATES)) if CANDIDATES[c] != "zz"]
    order = sorted(known, key=lambda c: -scores[c])
    assert [c.item_id for c in result.candidates] == [CANDIDATES[c] for c in order]
    np.testing.assert_allclose([c.score for c in result.candidates], scores[order], rtol=1e-6)
    np.testing.assert_allclose([c.rating for c in result.candidates], rating[order], rtol=1e-6)

    # The newest MAX_LEN real items are read: the columns, oldest first.
    real = [j for j, h in enumerate(HISTORY) if h and h != "nope"]
    read = real[-MAX_LEN:]
    assert [p for p, _, _ in result.columns] == read
    np.testing.assert_array_equal(result.weights, attention[np.ix_(order, read)])
    signs_matter = False
    for row, candidate in zip(order, result.candidates):
        weights = attention[row, read]
        expected = [read[j] for j in np.argsort(-np.abs(weights), kind="stable")]
        assert [h.position for h in candidate.history] == expected
        assert [h.item_id for h in candidate.history] == [HISTORY[p] for p in expected]
        np.testing.assert_array_equal([h.weight for h in candidate.history], attention[row, expected])
        np.testing.assert_allclose(sum(abs(h.share) for h in candidate.history), 1.0, rtol=1e-5)
        signs_matter |= expected != [read[j] for j in np.argsort(-weights, kind="stable")]
    assert signs_matter, "the fixture should give negative weights that order differently from |weight|"
    assert np.any(result.weights < 0) and np.any(result.weights > 0)


def test_only_real_history_items_are_listed_and_unknown_ids_are_notes(explained):
    _, result = explained
    listed = {h.item_id for c in result.candidates for h in c.history}
    assert "" not in listed and "nope" not in listed and "zz" not in {c.item_id for c in result.candidates}
    assert result.unknown_history == ["nope"]
    assert result.unknown_candidates == ["zz"]
    assert result.unread_history == ["i3", "i7", "i5"]  # older than the newest MAX_LEN items
    notes = " ".join(result.notes)
    assert "nope" in notes and "zz" in notes and "i3, i7, i5" in notes
    # Titles where given, ids elsewhere.
    assert result.candidates[[c.item_id for c in result.candidates].index("i1")].title == "One (1995)"
    table = result.table(top=2)
    assert "One (1995)" in table and "nope" not in table
    assert len(table.splitlines()) == 2 + len(result.candidates) * 3


def test_known_ids_are_asked_through_the_signatures(explained):
    explainer, _ = explained
    assert explainer.known(["i1", "nope", "i39", "", "i40"], probe="i2") == {
        "i1": True, "nope": False, "i39": True, "i40": False}


def test_empty_candidates_and_empty_history(explained):
    from tfrec_attn.app.explain import ExplainError

    explainer, _ = explained
    with pytest.raises(ExplainError, match="candidates: the candidate list is empty"):
        explainer.explain(["i1"], ["", ""])
    result = explainer.explain([], ["i1", "i2"])
    assert result.columns == [] and all(c.history == [] for c in result.candidates)
    assert len(result.candidates) == 2 and result.notes == []


def test_heatmap_png(explained, tmp_path):
    import matplotlib.pyplot as plt

    from tfrec_attn.app.plots import attention_heatmap

    _, result = explained
    path = result.heatmap(str(tmp_path / "attention.png"))
    assert os.path.getsize(path) > 10_000
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    # Readable at 10 candidates x 50 history items with long titles: a wide figure, cut labels.
    rng = np.random.default_rng(0)
    long = [f"A Rather Long Movie Title, Part {i}: The Sequel Strikes Back (1995)" for i in range(60)]
    wide = attention_heatmap(rng.normal(size=(10, 50)), long[:10], long[10:], str(tmp_path / "wide.png"))
    height, width = plt.imread(wide).shape[:2]
    assert width > 2 * height and height > 400
    with pytest.raises(ValueError, match="column labels"):
        attention_heatmap(np.zeros((2, 3)), ["a", "b"], ["x"], str(tmp_path / "bad.png"))


# -- the CLI ------------------------------------------------------------------------------------------------
def run_main(argv, capsys):
    from tfrec_attn.app.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def items_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("items") / "items.csv"
    path.write_text("item_id,title\ni1,One (1995)\ni2,Two (1996)\ni17,Seventeen (1997)\n", encoding="utf-8")
    return str(path)


def test_cli_prints_the_table_and_writes_the_heatmap(exports, explained, items_csv, capsys, tmp_path):
    heatmap = str(tmp_path / "h.png")
    code, out, err = run_main(["explain", exports[1], "--history", *HISTORY[:2], ",".join(HISTORY[3:]),
                               "--candidates", *CANDIDATES, "--items", items_csv, "--top", "2",
                               "--heatmap", heatmap], capsys)
    assert code == 0, err
    lines = out.splitlines()
    _, result = explained
    assert lines[0].startswith(f"ranking export {exports[1]}: 5 candidate(s)")
    first = result.candidates[0]
    assert lines[2].split()[:2] == ["1", first.item_id] and f"{first.score:9.4f}".strip() in lines[2]
    assert first.history[0].item_id in lines[3].split()
    assert "One (1995)" in out and "Two (1996)" in out, out
    assert len(lines) == 2 + 5 * 3  # --top 2: two history items per candidate
    assert os.path.getsize(heatmap) > 10_000
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert any("nope" in n for n in notes) and any("zz" in n for n in notes)


def test_cli_json_in_a_fresh_process(exports, explained):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "tfrec_attn.app.cli", "explain", exports[0], "--history", *HISTORY,
                           "--candidates", *CANDIDATES, "--json", "--top", "3"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    _, result = explained
    want = result.to_dict(top=3)
    assert got["model"] == exports[1]  # the export base resolves to ranking/<newest>
    assert [c["item_id"] for c in got["candidates"]] == [c["item_id"] for c in want["candidates"]]
    for g, w in zip(got["candidates"], want["candidates"]):
        assert [h["item_id"] for h in g["history"]] == [h["item_id"] for h in w["history"]]
        assert len(g["history"]) == 3
        np.testing.assert_allclose([h["weight"] for h in g["history"]], [h["weight"] for h in w["history"]],
                                   rtol=1e-6)
    assert got["unknown_history"] == ["nope"] and got["unknown_candidates"] == ["zz"]


@pytest.mark.parametrize("case", ["retrieval export", "recommend export", "no model", "empty candidates",
                                  "no candidates", "top 0"])
def test_cli_errors_are_one_line_and_exit_2(case, exports, tiny_export, capsys, tmp_path):
    model = {"retrieval export": tiny_export[0], "recommend export": exports[2],
             "no model": str(tmp_path)}.get(case, exports[1])
    candidates = {"empty candidates": ["--candidates", ","], "no candidates": ["--candidates"]}.get(
        case, ["--candidates", "i1"])
    extra = ["--top", "0"] if case == "top 0" else []
    code, out, err = run_main(["explain", model, "--history", "i1", "i2", *candidates, *extra], capsys)
    assert code == 2, (out, err)
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and "error: " in last
    expected = {
        "retrieval export": f"{tiny_export[1]}: its `explain` signature returns attention float32 [?, ?], "
                            "contributions float32 [?, ?, ?], not attention float32 [B, C, H]",
        "recommend export": f"{exports[2]}: has no `explain` signature",
        "no model": f"{tmp_path}: neither a SavedModel",
        "empty candidates": "--candidates: no item ids given",
        "no candidates": "argument --candidates: expected at least one argument",
        "top 0": "--top 0: must be >= 1",
    }[case]
    assert expected in last, last
    if case.endswith("export"):
        assert "needs a ranking export" in last
