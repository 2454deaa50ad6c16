"""Every mistake a user can make on the command line ends as one `error:` line and exit 2.

Each case runs the real `tfrec-attn` entry point in a fresh process.
"""

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "tfrec_attn.app.cli"]
CONFIG = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "ml100k_retrieval.yaml")
PIPELINE = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "ml100k_pipeline.yaml")
GOOD = "user_id,item_id,timestamp\n1,a,1\n1,b,2\n1,c,3\n2,a,1\n2,c,2\n2,b,3\n"

FILES = {
    "empty.csv": b"",
    "header.csv": b"user_id,item_id,timestamp\n",
    "latin1.csv": b"user_id,item_id,timestamp\n1,caf\xe9,3\n",
    "huge_time.csv": b"user_id,item_id,timestamp\n1,2,99999999999999999999999\n",
    "good.csv": GOOD.encode(),
    "wide.csv": b"user_id,item_id,timestamp\n1,a,1\n1,b,2,oops\n",
    "odd.csv": b"user_id,item_id,timestamp,rating\n1,a,1,4\n1,a,1,4\n1,b,-2,-1\n2,a,1,3\n2,b,2,5\n",
    "a_file": b"x",
    # A quoted value that runs over a line break: malformed in an interactions file.
    "multiline.csv": b'user_id,item_id,timestamp\n1,a,1\n1,"b\nc",2\n1,c,3\n2,a,1\n2,b,2\n2,c,3\n',
    # In an items file only `text` may span lines; a title may not, and a quote must close.
    "items_break.csv": b'item_id,title,text\na,Alpha,"one\ntwo"\nb,"Be\nta",x\n',
    "items_open.csv": b'item_id,title,text\na,Alpha,ok\nb,Beta,"never closed\nc,Gamma,x\n',
    # Ids the tiny export knows (i0..i39), but for one user whose test target it does not.
    "partly_known.csv": b"user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2\nu1,i3,3\nu2,i4,1\nu2,i5,2\nu2,i6,3\n"
                        b"u3,i7,1\nu3,i8,2\nu3,zz,3\n",
}

CASES = [
    # (name, argv with {d} = the case's directory, fragment of the error line)
    ("missing file", ["data", "stats", "--interactions", "{d}/missing.csv"], "{d}/missing.csv: no such file"),
    ("a directory", ["data", "stats", "--interactions", "{d}"], "{d}: is a directory, not a data file"),
    ("empty file", ["data", "stats", "--interactions", "{d}/empty.csv"], "{d}/empty.csv: is empty"),
    ("header only", ["baselines", "--interactions", "{d}/header.csv"],
     "{d}/header.csv: no interactions after the header"),
    ("not UTF-8", ["data", "stats", "--interactions", "{d}/latin1.csv"],
     "{d}/latin1.csv:2: field '<line>': not valid UTF-8 (byte 0xe9 at column 6)"),
    ("timestamp beyond int64", ["data", "stats", "--interactions", "{d}/huge_time.csv"],
     "{d}/huge_time.csv:2: field 'timestamp': outside the 64-bit integer range"),
    ("more fields than the header", ["data", "stats", "--interactions", "{d}/wide.csv"],
     "{d}/wide.csv:3: field '<line>': expected 3 fields (user_id,item_id,timestamp), found 4"),
    ("missing config", ["train", "{d}/nope.yaml", "--output-dir", "{d}/run", "--interactions", "{d}/good.csv"],
     "{d}/nope.yaml: cannot read the config"),
    ("output dir is a file", ["train", CONFIG, "--output-dir", "{d}/a_file", "--interactions", "{d}/good.csv"],
     "--output-dir {d}/a_file: is a file, not a directory"),
    ("plot in a missing directory", ["data", "stats", "--interactions", "{d}/good.csv", "--plot", "{d}/no/x.png"],
     "--plot {d}/no/x.png: directory {d}/no does not exist"),
    ("unknown dataset", ["data", "download", "--dataset", "ml-5m"], "argument --dataset: invalid choice: 'ml-5m'"),
    ("unknown baseline", ["baselines", "--interactions", "{d}/good.csv", "--models", "Foo"],
     "argument --models: invalid choice: 'Foo'"),
    ("unknown strategy", ["train", CONFIG, "--output-dir", "{d}/run", "--interactions", "{d}/good.csv",
                          "--set", "train.strategy=horovod"],
     "--set train.strategy=horovod: train.strategy='horovod' must be one of auto, one_device"),
    ("the main job's config handed to train", ["train", PIPELINE, "--output-dir", "{d}/run", "--interactions",
                                               "{d}/good.csv"],
     "ml100k_pipeline.yaml:2: recipe='pipeline' is not trained by `tfrec-attn train` (trainable: kernel_autoencoder, "
     "ranking, rating, retrieval); the main job's config runs with `tfrec-attn run --config FILE`"),
    ("an evaluated run of another recipe", ["evaluate", "{d}/ranking_run", "--interactions", "{d}/good.csv"],
     "{d}/ranking_run: a ranking run; this command evaluates retrieval runs and exports"),
    ("bad TF_CONFIG", ["train", CONFIG, "--output-dir", "{d}/run", "--interactions", "{d}/good.csv",
                       "--set", "train.strategy=multi_worker_mirrored"], "TF_CONFIG: invalid JSON at line 1 column 2"),
    ("nothing listening", ["query", "--server", "127.0.0.1:1", "--history", "1,2", "--timeout", "3"],
     "127.0.0.1:1: UNAVAILABLE"),
    ("k below 1", ["query", "--server", "127.0.0.1:1", "--history", "1,2", "-k", "0"], "-k 0: must be >= 1"),
    ("quote spans lines in interactions", ["data", "stats", "--interactions", "{d}/multiline.csv"],
     "{d}/multiline.csv:3: field 'item_id': unclosed quote: a quoted value opened on this line does not close"),
    ("line break in an item title", ["data", "stats", "--interactions", "{d}/good.csv", "--items",
                                     "{d}/items_break.csv"],
     "{d}/items_break.csv:4: field 'title': contains a line break (its quoted value runs from line 4 to 5)"),
    ("quote open at the end of the items file", ["data", "stats", "--interactions", "{d}/good.csv", "--items",
                                                 "{d}/items_open.csv"],
     "{d}/items_open.csv:3: field 'text': unclosed quote: the quoted value runs from this line to the end of "
     "the file (line 4)"),
    ("no model at the path", ["evaluate", "{d}/a_file", "--interactions", "{d}/good.csv"],
     "{d}/a_file: neither a SavedModel"),
    ("data the model does not know", ["evaluate", "{export}", "--interactions", "{d}/good.csv"],
     ("{version}: 2 of 2 test targets (100%) are item ids the model does not know",
      "The data ({d}/good.csv) probably does not match the model")),
]


def write_files(tmp_path):
    for file, content in FILES.items():
        (tmp_path / file).write_bytes(content)
    (tmp_path / "ranking_run").mkdir()
    (tmp_path / "ranking_run" / "config.yaml").write_text("recipe: ranking\n")  # a run dir of another recipe
    return str(tmp_path)


def run_cli(argv, env=None):
    return subprocess.run(CLI + argv, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("name,argv,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_exit_2(name, argv, fragment, tmp_path, request):
    d = write_files(tmp_path)
    where = {"d": d}
    if any("{export}" in a for a in argv):
        where["export"], where["version"] = request.getfixturevalue("tiny_export")
    env = {**os.environ, "TF_CONFIG": "{not json" if name == "bad TF_CONFIG" else ""}
    proc = run_cli([a.format(**where) for a in argv], env=env)
    assert proc.returncode == 2, (proc.stdout[-1000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "error: " in last, last
    for part in (fragment,) if isinstance(fragment, str) else fragment:
        assert part.format(**where) in last, last


def test_legal_but_odd_data_is_reported(tmp_path):
    (tmp_path / "odd.csv").write_bytes(FILES["odd.csv"])
    proc = subprocess.run(CLI + ["data", "stats", "--interactions", str(tmp_path / "odd.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert any("1 row(s) repeat an earlier (user_id, item_id, timestamp)" in w for w in warnings)
    assert any("1 timestamp(s) are negative" in w for w in warnings)
    assert any("1 rating(s) are negative" in w for w in warnings)


def test_skipped_multiline_records_are_counted_and_named(tmp_path):
    """--on-bad-line skip: a quoted value over a line break is a counted bad line, not a cut record."""
    d = write_files(tmp_path)
    proc = run_cli(["data", "stats", "--interactions", f"{d}/multiline.csv", "--on-bad-line", "skip", "--json"])
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning: skipped")]
    assert warning and warning[0].startswith("warning: skipped 2 malformed line(s); first: "
                                             f"{d}/multiline.csv:3: field 'item_id': unclosed quote"), proc.stderr
    assert f"{d}/multiline.csv:4: field 'timestamp': expected 3 fields" in warning[0]
    assert '"interactions": 5' in proc.stdout


def test_some_targets_unknown_to_the_model_is_a_warning(tiny_export, tmp_path):
    d = write_files(tmp_path)
    proc = run_cli(["evaluate", tiny_export[0], "--interactions", f"{d}/partly_known.csv"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert any(f"{tiny_export[1]}: 1 of 3 test targets (33%) are item ids the model does not know (e.g. 'zz')"
               in w for w in warnings), proc.stderr
    assert any(line.startswith("retrieval ") for line in proc.stdout.splitlines()), proc.stdout


@pytest.fixture(scope="module")
def server(tiny_export):
    from tfrec_attn.serving.config import single_model_config
    from tfrec_attn.serving.server import ModelServer

    server = ModelServer(single_model_config("retrieval", tiny_export[0]), port=0, host="127.0.0.1",
                         poll_wait_seconds=0).start()
    yield f"127.0.0.1:{server.port}"
    server.stop()


def query(server, *argv):
    proc = run_cli(["query", "--server", server, *argv])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: ")]
    return rows, notes


def test_query_says_when_k_is_capped_by_the_export(server):
    rows, notes = query(server, "--history", "i1,i2,i3", "-k", "100000")
    assert len(rows) == 10  # the tiny export's K
    assert notes == ["note: -k 100000: the model returns at most 10 items (the export's K), so 10 are listed; "
                     "for more, export with a larger K: `tfrec-attn export RUN_DIR --k 100000` or train with "
                     "--set export.k=100000"]
    rows, notes = query(server, "--history", "i1,i2,i3", "-k", "5")
    assert len(rows) == 5 and notes == []


def test_query_says_when_no_history_id_is_known(server):
    rows, notes = query(server, "--history", "zz,yy", "-k", "5")
    assert [float(r[2]) for r in rows] == [0.0] * 5  # the zero user vector: every item ties at 0
    assert notes == ["note: none of the history ids (zz, yy) is known to the model, so this is its answer for an "
                     "empty history: every item scores 0 (the user vector is zero), so the list is the first "
                     "items of the model's vocabulary in its order, not a recommendation"]
    _, notes = query(server, "--history", "i1,zz,i2", "-k", "5")
    assert notes == ["note: 1 of 3 history ids are unknown to the model and were ignored: zz"]


def assert_one_error_line(proc, *fragments):
    """Exit 2, no traceback, and stderr is exactly one ``error: ...`` line holding ``fragments``."""
    assert proc.returncode == 2, (proc.stdout[-1000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def ranking_export(tiny_ranking):
    """A ranking export (serving_default: history + candidates -> scores, rating) of a seeded,
    untrained ranker over the tiny catalogue."""
    return tiny_ranking.ranking


def test_a_ranking_export_handed_to_evaluate_is_one_error_line(ranking_export, tmp_path):
    """The retrieval evaluator refuses a ranking export by its signature, and says what works."""
    d = write_files(tmp_path)
    base = os.path.dirname(ranking_export)  # BASE/ranking: resolved to its newest version
    proc = run_cli(["evaluate", base, "--interactions", f"{d}/good.csv"])
    assert_one_error_line(proc, f"error: {ranking_export}: a ranking export (its serving_default takes "
                                "candidates, history and returns rating, scores), not a retrieval export",
                          "history (string [batch, None]) -> item_ids and scores", "RUN_DIR/metrics.json",
                          "evaluate the run's recommend export")


def test_the_saved_model_evaluator_refuses_a_ranking_export(ranking_export, tiny_export):
    """API users get the same error, before any scoring."""
    from tfrec_attn.data import leave_one_out
    from tfrec_attn.data.synthetic import planted_sequences
    from tfrec_attn.errors import TfrecAttnError
    from tfrec_attn.evaluation.saved_model import (
        ExportKindError,
        evaluate_saved_model,
        load_saved_model,
    )

    split = leave_one_out(planted_sequences(num_items=40, num_users=50).interactions)
    with pytest.raises(ExportKindError, match="a ranking export") as info:
        evaluate_saved_model(ranking_export, split)
    assert isinstance(info.value, TfrecAttnError) and isinstance(info.value, ValueError)
    path, loaded = load_saved_model(tiny_export[0])  # a retrieval export loads as before
    assert path == tiny_export[1] and "serving_default" in loaded.signatures


# `import implicit` or `import threadpoolctl` fails as in a plain `pip install .` (no [als] extra).
WITHOUT = ("import sys\n"
           "for name in sys.argv.pop(1).split(','):\n"
           "    sys.modules[name] = None\n"
           "from tfrec_attn.app.cli import main\n"
           "sys.exit(main(sys.argv[1:]))\n")


@pytest.mark.parametrize("missing", ["implicit", "threadpoolctl"])
def test_baselines_without_the_als_extra_is_one_error_line(missing, tmp_path):
    d = write_files(tmp_path)
    proc = subprocess.run([sys.executable, "-c", WITHOUT, missing, "baselines", "--interactions", f"{d}/good.csv"],
                          capture_output=True, text=True, timeout=300)
    # A warning about the tiny catalogue may come first; the error is the only `error:` line, and last.
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [proc.stderr.strip().splitlines()[-1]]
    assert errors[0] == (f"error: the ALS baseline needs the `implicit` and `threadpoolctl` packages, and "
                         f"`{missing}` is not installed: pip install 'tfrec_attn[als]' (in a checkout: "
                         "pip install -e '.[als]'), or leave ALS out (tfrec-attn baselines --models MostPop)")
    assert proc.stdout == ""  # it fails before fitting MostPop, not after


def test_mostpop_works_without_the_als_extra(tmp_path):
    d = write_files(tmp_path)
    proc = subprocess.run([sys.executable, "-c", WITHOUT, "implicit,threadpoolctl", "baselines", "--interactions",
                           f"{d}/good.csv", "--models", "MostPop", "--json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["MostPop"]["HR@10"] == 1.0  # 3 items: every target is in the top 10
