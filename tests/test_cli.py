import os
import subprocess
import sys

CLI = [sys.executable, "-m", "tfrec_attn.app.cli"]
CONFIG = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "ml100k_retrieval.yaml")


def planted_csv(tmp_path, **kwargs):
    """The planted-pattern data set written as a generic interactions CSV."""
    from tfrec_attn.data.synthetic import planted_sequences

    data = planted_sequences(num_items=40, **kwargs).interactions
    path = tmp_path / "events.csv"
    with open(path, "w") as handle:
        handle.write("user_id,item_id,timestamp\n")
        for u, i, t in zip(data.user_ids, data.item_ids, data.timestamps):
            handle.write(f"{u},{i},{t}\n")
    return path


def test_baselines_command_prints_the_reference_table(ml100k_dir):
    proc = subprocess.run(CLI + ["baselines", "--data", ml100k_dir], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    full_table = proc.stdout.split("sampled")[0]
    lines = {line.split()[0]: line.split()[1:] for line in full_table.splitlines() if line.strip()}
    assert lines["MostPop"][:2] == ["0.0848", "0.0441"]
    assert abs(float(lines["ALS"][0]) - 0.1379) <= 0.01


def test_data_stats_and_plot(ml100k_dir, tmp_path):
    png = tmp_path / "lengths.png"
    proc = subprocess.run(CLI + ["data", "stats", "--data", ml100k_dir, "--plot", str(png)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "train rows         98,114" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_file_gives_one_line_error_not_a_traceback(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n1\t2\t3\n")
    (tmp_path / "u.item").write_text("")
    proc = subprocess.run(CLI + ["data", "stats", "--data", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {os.path.join(str(tmp_path), 'u.data')}:2: field 'timestamp': "
                                   "expected 4 fields (user_id, item_id, rating, timestamp), found 3")
    assert "Traceback" not in proc.stderr


def test_train_evaluate_export_on_your_own_csv(tmp_path):
    """The README's "your own data" path: generic CSV -> train -> export -> evaluate the export."""
    inter = planted_csv(tmp_path, num_users=120, seed=5)
    out = tmp_path / "run"
    sets = ["model.embedding_dim=32", "model.num_blocks=1", "model.max_len=20", "model.dropout=0.1",
            "train.batch_size=32", "train.learning_rate=0.005", "train.epochs=12", "export.k=20",
            "train.refit_with_validation=false"]
    cmd = CLI + ["train", CONFIG, "--interactions", str(inter), "--output-dir", str(out), "--keras-verbose", "0"]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"exported {out}/export/retrieval/1" in proc.stdout
    in_memory = [line for line in proc.stdout.splitlines() if line.startswith("retrieval ")][0].split()
    assert float(in_memory[1]) >= 0.8  # HR@10 on the planted pattern
    proc = subprocess.run(CLI + ["evaluate", str(out / "export" / "retrieval"), "--interactions", str(inter)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = [line for line in proc.stdout.splitlines() if line.startswith("retrieval ")][0].split()
    assert abs(float(exported[1]) - float(in_memory[1])) <= 0.002
    assert abs(float(exported[2]) - float(in_memory[2])) <= 0.002
    # A config typo is a one-line error naming the override.
    proc = subprocess.run(CLI + ["train", CONFIG, "--interactions", str(inter), "--output-dir",
                                 str(tmp_path / "x"), "--set", "model.num_heads=3"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: --set model.num_heads=3: model.num_heads=3 must divide "
                                   "model.embedding_dim=64")


def test_training_resumes_mid_epoch_after_a_crash(tmp_path):
    """SIGKILL inside an epoch, rerun the same command: it continues inside that epoch."""
    import csv
    import json
    import signal
    import time

    from tfrec_attn.training.engine import backup_position

    inter = planted_csv(tmp_path, num_users=400, min_len=10, max_len=30, seed=2)
    out = tmp_path / "run"
    cmd = CLI + ["train", CONFIG, "--interactions", str(inter), "--output-dir", str(out), "--keras-verbose", "0",
                 "--no-export", "--set", "model.embedding_dim=16", "--set", "model.num_blocks=1",
                 "--set", "model.max_len=30", "--set", "train.batch_size=16", "--set", "train.epochs=6",
                 "--set", "train.patience=100", "--set", "train.refit_with_validation=false",
                 "--set", "train.backup_every_steps=4"]  # 25 steps an epoch: backups inside epochs
    history = out / "history.csv"

    def epochs_logged():
        if not history.exists():
            return []
        with open(history) as handle:
            return [int(row["epoch"]) for row in csv.DictReader(handle)]

    def position():
        try:
            return backup_position(str(out / "backup"))
        except Exception:  # a checkpoint being written
            return None

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        at = position()
        if len(epochs_logged()) >= 2 and at and at["step"] > 0:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(epochs_logged())
    assert 2 <= done_before < 6 and (out / "backup").is_dir()
    at = backup_position(str(out / "backup"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_at"] == at and at["step"] > 0 and at["epoch"] >= done_before
    assert f"at epoch {at['epoch']}, step {at['step']}" in proc.stdout
    epochs = epochs_logged()
    assert sorted(set(epochs)) == list(range(6))
    assert len(epochs) <= 7  # at most the epoch in flight at the crash was logged twice
    assert metrics["epochs"] == 6 and metrics["validation"]["val_hr10"] > 0.8
    assert not (out / "backup").exists()  # a finished run leaves no backup behind


def test_the_example_training_script_trains_and_exports(tmp_path):
    inter = planted_csv(tmp_path, num_users=80, seed=4)
    script = os.path.join(os.path.dirname(__file__), "..", "training", "train_retrieval.py")
    cmd = [sys.executable, script, CONFIG, "--interactions", str(inter), "--output-dir", str(tmp_path / "run")]
    for s in ("model.embedding_dim=16", "model.num_blocks=1", "model.max_len=20", "train.epochs=3",
              "train.refit_with_validation=false"):
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test NDCG@10 " in proc.stdout and (tmp_path / "run" / "export" / "retrieval" / "1" / "saved_model.pb").exists()
    assert "Traceback" not in proc.stderr and "cuInit" not in proc.stderr  # no stray TensorFlow noise


def test_keras_progress_is_one_line_per_epoch_unless_stdout_is_a_terminal(monkeypatch):
    import argparse
    import io

    from tfrec_attn.app.commands.common import add_keras_verbose_arg, keras_verbose

    parser = argparse.ArgumentParser()
    add_keras_verbose_arg(parser)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdout", io.StringIO())  # a log file or a pipe
    assert keras_verbose(parser.parse_args([])) == 2
    assert keras_verbose(parser.parse_args(["--keras-verbose", "1"])) == 1
    monkeypatch.setattr("sys.stdout", Terminal())
    assert keras_verbose(parser.parse_args([])) == 1
    assert keras_verbose(parser.parse_args(["--keras-verbose", "0"])) == 0
