"""Every mistake a user can make on the command line ends as one `error:` line and exit 2.

Each case runs the real `tfrec-attn` entry point in a fresh process.
"""

import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "tfrec_attn.app.cli"]
CONFIG = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "ml100k_retrieval.yaml")
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
    ("bad TF_CONFIG", ["train", CONFIG, "--output-dir", "{d}/run", "--interactions", "{d}/good.csv",
                       "--set", "train.strategy=multi_worker_mirrored"], "TF_CONFIG: invalid JSON at line 1 column 2"),
    ("nothing listening", ["query", "--server", "127.0.0.1:1", "--history", "1,2", "--timeout", "3"],
     "127.0.0.1:1: UNAVAILABLE"),
]


@pytest.mark.parametrize("name,argv,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_exit_2(name, argv, fragment, tmp_path):
    for file, content in FILES.items():
        (tmp_path / file).write_bytes(content)
    d = str(tmp_path)
    env = {**os.environ, "TF_CONFIG": "{not json" if name == "bad TF_CONFIG" else ""}
    proc = subprocess.run(CLI + [a.format(d=d) for a in argv], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 2, (proc.stdout[-1000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "error: " in last and fragment.format(d=d) in last, last


def test_legal_but_odd_data_is_reported(tmp_path):
    (tmp_path / "odd.csv").write_bytes(FILES["odd.csv"])
    proc = subprocess.run(CLI + ["data", "stats", "--interactions", str(tmp_path / "odd.csv")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert any("1 row(s) repeat an earlier (user_id, item_id, timestamp)" in w for w in warnings)
    assert any("1 timestamp(s) are negative" in w for w in warnings)
    assert any("1 rating(s) are negative" in w for w in warnings)
