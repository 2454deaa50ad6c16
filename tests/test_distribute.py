"""tf.distribute on CPU, loopback only; every subprocess has a hard time limit and is killed.

A MultiWorkerMirroredStrategy task whose peer is gone waits forever and ignores SIGTERM:
the tests run workers through the launcher and stop anything left with SIGKILL.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_cli import CLI, CONFIG, planted_csv

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = os.path.join(HERE, "distributed_steps.py")


def run_bounded(cmd, timeout, **kwargs):
    """subprocess.run in its own process group, SIGKILLed (with its children) at the limit."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{cmd[:4]}... ran past {timeout}s:\n{out[-3000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out


LOSSES = ["full", "sampled", "in_batch", "ranking"]


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    """Every loss trained 6 steps on one device and on 2 mirrored replicas, in one process."""
    out = tmp_path_factory.mktemp("equivalence") / "result.json"
    code, log = run_bounded([sys.executable, STEPS, "equivalence", ",".join(LOSSES), "6", str(out)], timeout=480)
    assert code == 0, log[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("loss", LOSSES)
def test_two_mirrored_replicas_train_exactly_like_one_device(loss, equivalence):
    """Same global batch and seed: a per-replica mean (2x the step) or ungathered in-batch
    negatives (another objective) would move the weights apart."""
    result = equivalence[loss]
    assert result["replicas"] == 2
    assert result["loss_mirrored"] == pytest.approx(result["loss_one_device"], rel=1e-4)
    # The ranker: every weight agrees to ~1e-6 but one near-dead ReLU bias, where Adam's g / sqrt(v)
    # amplifies float rounding to ~1e-4; a wrong replica scaling or other negatives moves weights ~1e-2.
    tolerance = 5e-4 if loss == "ranking" else 1e-4
    assert result["max_weight_difference"] < tolerance * max(1.0, result["weight_scale"])


def _train_cmd(inter, out, *extra):
    sets = ["model.embedding_dim=16", "model.num_blocks=1", "model.max_len=20", "model.dropout=0.0",
            "train.batch_size=32", "train.epochs=3", "train.patience=100",
            "train.refit_with_validation=false", "train.shuffle_ties=false", "train.peer_timeout_seconds=120"]
    cmd = CLI + ["train", CONFIG, "--interactions", str(inter), "--output-dir", str(out), "--keras-verbose", "0",
                 "--no-export"]
    for s in sets:
        cmd += ["--set", s]
    return cmd + list(extra)


def _checkpoint(prefix):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "/.ATTRIBUTES/VARIABLE_VALUE" in name and "optimizer" not in name}


def test_two_local_workers_killed_mid_run_resume_and_end_with_identical_weights(tmp_path):
    """Two workers through the launcher, SIGKILLed mid-run (the launcher and both) and run
    again: they resume from the chief's backup, stay in step to the end (identical weights)
    and learn the planted pattern as one process does. (One test: both halves train the same
    two workers, and a run of them is a third of this file's time.)"""
    from tfrec_attn.training.engine import backup_position

    # Histories of 3-40 items: the workers' batches differ in length every step (their sparse
    # embedding gradients differ in rows, which TF's collective gather cannot take).
    inter = planted_csv(tmp_path, num_users=200, min_len=3, max_len=40, seed=3)
    out = tmp_path / "run"
    recipe = ["--set", "model.max_len=40", "--set", "train.epochs=6", "--set", "train.batch_size=16"]
    cmd = _train_cmd(inter, out, "--workers", "2", *recipe, "--set", "train.backup_every_steps=3")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                at = backup_position(str(out / "backup"))
            except Exception:  # being written
                at = None
            if at and at["epoch"] >= 2:
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, mid-run
        proc.wait()
    assert at and at["epoch"] >= 2, "no backup was written"
    code, log = run_bounded(cmd, timeout=420)
    assert code == 0, log[-4000:]
    assert "launching 2 worker(s)" in log
    assert "retracing" not in log and "Traceback" not in log and "IndexedSlices" not in log  # no stray noise
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_at"] and metrics["resumed_at"]["epoch"] >= 2, log[-3000:]
    assert metrics["replicas"] == 2 and metrics["per_replica_batch_size"] == 8
    assert metrics["strategy"] == "multi_worker_mirrored" and metrics["epochs"] == 6
    chief = _checkpoint(out / "checkpoints" / "final")
    other = _checkpoint(out / "workers" / "worker-1" / "checkpoints" / "final")
    assert chief.keys() == other.keys() and len(chief) > 5
    for name in chief:  # both restored the same state; all-reduced gradients: the copies never drift apart
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    # The same recipe on one process learns the planted pattern alike (different batches: within noise).
    single = tmp_path / "single"
    code, log = run_bounded(_train_cmd(inter, single, *recipe), timeout=300)
    assert code == 0, log[-3000:]
    alone = json.loads((single / "metrics.json").read_text())
    assert metrics["validation"]["val_ndcg10"] == pytest.approx(alone["validation"]["val_ndcg10"], abs=0.1)
    assert metrics["validation"]["val_hr10"] > 0.8


def test_launcher_stops_every_worker_when_one_dies(tmp_path):
    inter = planted_csv(tmp_path, num_users=200, seed=3)
    out = tmp_path / "run"
    cmd = _train_cmd(inter, out, "--workers", "2", "--set", "train.epochs=200")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (out / "history.csv").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)  # both workers are training once an epoch is logged
        assert (out / "history.csv").exists(), "the workers never finished an epoch"
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 2
        os.kill(int(children[1]), signal.SIGKILL)
        killed = time.time()
        proc.wait(timeout=30)  # the survivor would wait forever for its peer
        assert time.time() - killed < 30
        assert proc.returncode != 0
        assert not subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True).stdout
        for child in children:
            assert not os.path.exists(f"/proc/{child}") or "zombie" in open(f"/proc/{child}/status").read().lower()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_parameter_servers_shard_the_item_embedding_and_train(tmp_path):
    from tfrec_attn.training.cluster import launch_local  # noqa: F401  (what the CLI's --ps uses)

    out = tmp_path / "ps.json"
    code, log = run_bounded([sys.executable, "-c",
                             "import sys; from tfrec_attn.training.cluster import launch_local; "
                             f"sys.exit(launch_local([sys.executable, {STEPS!r}, 'parameter_server', {str(out)!r}], "
                             "1, num_ps=2, chief=True))"], timeout=420)
    assert code == 0, log[-4000:]
    result = json.loads(out.read_text())
    assert result["strategy"].startswith("ParameterServerStrategy")
    devices = sorted(shard["device"] for shard in result["embedding_shards"])
    assert len(devices) == 2 and "/job:ps/replica:0/task:0" in devices[0] and "/job:ps/replica:0/task:1" in devices[1]
    rows = [shard["shape"][0] for shard in result["embedding_shards"]]
    assert sum(rows) == result["num_indices"] > 1000 and abs(rows[0] - rows[1]) <= 1  # split in halves
    assert result["epochs"] == 2 and 0.0 < result["validation"]["val_hr50"] <= 1.0


def test_bad_tf_config_and_indivisible_batch_are_one_line_errors(tmp_path):
    inter = planted_csv(tmp_path, num_users=60, seed=3)
    env = {**os.environ, "TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 4}}'}
    proc = subprocess.run(_train_cmd(inter, tmp_path / "a", "--set", "train.strategy=multi_worker_mirrored"),
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: TF_CONFIG: task.index=4") and "worker" in proc.stderr
    code, log = run_bounded([sys.executable, "-c", (
        "import tfrec_attn, sys\n"
        "from tfrec_attn.training import distribute\n"
        "distribute.split_cpu(2)\n"
        "from tfrec_attn.app.cli import main\n"
        f"sys.exit(main({_train_cmd(inter, tmp_path / 'b', '--set', 'train.strategy=mirrored', '--set', 'train.batch_size=33')[3:]!r}))")],
        timeout=120)
    assert code == 2, log[-2000:]
    assert "error: --set train.batch_size=33: train.batch_size=33 must be divisible by the 2 replicas" in log
    assert "Traceback" not in log


def test_a_worker_whose_peer_never_starts_fails_in_bounded_time(tmp_path):
    from tfrec_attn.training.cluster import local_cluster

    inter = planted_csv(tmp_path, num_users=60, seed=3)
    cluster = local_cluster(2)  # worker 1 is never started: nothing listens on its port
    env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})}
    began = time.time()
    code, log = run_bounded(_train_cmd(inter, tmp_path / "run", "--set", "train.strategy=multi_worker_mirrored",
                                       "--set", "train.peer_timeout_seconds=10"), timeout=120, env=env)
    assert code == -signal.SIGKILL, log[-3000:]  # blocked inside TensorFlow: only SIGKILL ends it
    assert time.time() - began < 90
    assert f"unreachable: worker:1 ({cluster['worker'][1]})" in log
    assert "train.peer_timeout_seconds=10" in log
