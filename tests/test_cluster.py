"""TF_CONFIG validation, the local cluster launcher, and the multi-worker deployment files.

The launcher tests run tiny Python tasks (no TensorFlow). Each task records its pid, so
every process is SIGKILLed in a ``finally`` even when the launcher misbehaves.
"""

import contextlib
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tfrec_attn.training.cluster import (
    ClusterError,
    is_chief,
    launch_local,
    local_cluster,
    parse_tf_config,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "training", "k8s")
STRATEGIES = {"auto", "one_device", "mirrored", "multi_worker_mirrored", "parameter_server", "tpu"}


def tf_config(cluster, task_type="worker", index=0, **extra):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}, **extra})


TWO_WORKERS = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}
WITH_CHIEF = {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]}
PS_CLUSTER = {"chief": ["c:1"], "worker": ["w0:1", "w1:1"], "ps": ["p0:1", "p1:1"]}


# --- parse_tf_config ---------------------------------------------------------------------

def test_unset_or_empty_is_a_single_process_run(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert parse_tf_config() is None
    assert parse_tf_config({"TF_CONFIG": "  "}) is None
    assert parse_tf_config({}) is None
    assert parse_tf_config("") is None


@pytest.mark.parametrize("cluster,task_type,index", [
    (TWO_WORKERS, "worker", 1),
    (WITH_CHIEF, "chief", 0),
    ({"chief": ["c:1"]}, "chief", 0),  # a chief alone is a one-task cluster
    (PS_CLUSTER, "ps", 1),
    (PS_CLUSTER, "evaluator", 0),  # a lone evaluator may stay out of the cluster
    ({"worker": ["[::1]:2222", "localhost:65535"], "evaluator": ["e:1"]}, "evaluator", 0),
])
def test_good_configs_round_trip(cluster, task_type, index):
    text = tf_config(cluster, task_type, index, environment="cloud")
    assert parse_tf_config(text) == json.loads(text)
    assert parse_tf_config({"TF_CONFIG": text}) == json.loads(text)


def test_reads_the_environment(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config(TWO_WORKERS, "worker", 1))
    assert parse_tf_config()["task"] == {"type": "worker", "index": 1}


@pytest.mark.parametrize("text,message", [
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker" "index": 0}}',
     r"invalid JSON at line 1 column 60: Expecting ',' delimiter"),  # where "index" starts
    ('{"cluster": {"worker": ["a:1"]},\n "task": }', r"invalid JSON at line 2 column 10: Expecting value"),
    ('["worker"]', r"expected an object with 'cluster' and 'task', got an array"),
    ('{"task": {"type": "worker", "index": 0}}', r"missing key 'cluster'"),
    (tf_config(["a:1"]), r"cluster must map job names to lists of 'host:port', got an array"),
    (tf_config({}), r"cluster must map job names"),
    (tf_config({"workers": ["a:1"]}), r"cluster\.workers is not a job type"),
    (tf_config({"worker": "a:1"}), r"cluster\.worker must be a non-empty list"),
    (tf_config({"worker": []}), r"cluster\.worker must be a non-empty list"),
    (tf_config({"worker": ["a:1", 2]}), r"cluster\.worker\[1\]=2 must be a 'host:port' string"),
    (tf_config({"worker": ["a:1", "b"]}), r"cluster\.worker\[1\]='b' has no port"),
    (tf_config({"worker": [":2222"]}), r"cluster\.worker\[0\]=':2222' has no port"),
    (tf_config({"worker": ["a:http"]}), r"cluster\.worker\[0\]='a:http' has an invalid port 'http'"),
    (tf_config({"worker": ["a:0"]}), r"cluster\.worker\[0\]='a:0' has an invalid port"),
    (tf_config({"worker": ["a:65536"]}), r"cluster\.worker\[0\]='a:65536' has an invalid port"),
    (tf_config({"worker": ["::1:2222"]}), r"cluster\.worker\[0\]='::1:2222': an IPv6 host needs brackets"),
    (tf_config({"chief": ["a:1"], "worker": ["a:1"]}), r"cluster\.worker\[0\]='a:1' is also cluster\.chief\[0\]"),
    (tf_config({"chief": ["a:1", "b:1"]}, "chief"), r"cluster\.chief has 2 tasks; there can be at most one"),
    (tf_config({"worker": ["a:1"], "evaluator": ["e:1", "f:1"]}), r"cluster\.evaluator has 2 tasks"),
    (tf_config({"ps": ["p:1"]}, "ps"), r"cluster has no 'chief' or 'worker' job"),
    (tf_config({"chief": ["c:1"], "ps": ["p:1"]}, "ps"), r"cluster\.ps needs a 'worker' job"),
    ('{"cluster": {"worker": ["a:1"]}}', r"missing key 'task'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": "worker"}', r"task must be an object .* got a string"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"index": 0}}', r"missing key 'task\.type'"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}', r"missing key 'task\.index'"),
    (tf_config(TWO_WORKERS, "master"), r"task\.type='master' is not one of chief, worker, ps, evaluator"),
    (tf_config(TWO_WORKERS, "chief"), r"task\.type='chief' is not a job of the cluster \(worker\)"),
    (tf_config(TWO_WORKERS, "worker", "1"), r"task\.index='1' must be an integer, got a string"),
    (tf_config(TWO_WORKERS, "worker", True), r"task\.index=True must be an integer, got a boolean"),
    (tf_config(TWO_WORKERS, "worker", 1.0), r"task\.index=1\.0 must be an integer"),
    (tf_config(TWO_WORKERS, "worker", 3), r"task\.index=3 is out of range for job 'worker' \(2 tasks\)"),
    (tf_config(TWO_WORKERS, "worker", -1), r"task\.index=-1 is out of range for job 'worker'"),
    (tf_config(WITH_CHIEF, "chief", 1), r"task\.index=1 is out of range for job 'chief' \(1 task\)"),
    (tf_config(TWO_WORKERS, "evaluator", 1), r"task\.index=1 is out of range for job 'evaluator' \(1 task\)"),
])
def test_bad_configs_name_the_key(text, message):
    with pytest.raises(ClusterError) as caught:
        parse_tf_config(text)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("TF_CONFIG: ")
    assert re.search(message, text), text
    assert isinstance(caught.value, ValueError)


def test_the_documented_message():
    with pytest.raises(ClusterError, match=r"^TF_CONFIG: task\.index=3 is out of range for job "
                                           r"'worker' \(2 tasks\)$"):
        parse_tf_config(tf_config({"worker": ["a:1", "b:1"]}, "worker", 3))


@pytest.mark.parametrize("cluster,task_type,index,expected", [
    (TWO_WORKERS, "worker", 0, True),  # no chief job: worker 0 is the chief
    (TWO_WORKERS, "worker", 1, False),
    (WITH_CHIEF, "chief", 0, True),
    (WITH_CHIEF, "worker", 0, False),
    (PS_CLUSTER, "ps", 0, False),
    (PS_CLUSTER, "evaluator", 0, False),  # it must not write the training run's files
])
def test_is_chief(cluster, task_type, index, expected):
    assert is_chief(parse_tf_config(tf_config(cluster, task_type, index))) is expected


def test_no_tf_config_is_chief():
    assert is_chief(None) is True


# --- local_cluster -------------------------------------------------------------------------

def test_local_cluster_has_distinct_free_ports():
    cluster = local_cluster(3, num_ps=2, chief=True)
    assert [len(cluster[job]) for job in ("chief", "worker", "ps")] == [1, 3, 2]
    addresses = [a for job in cluster.values() for a in job]
    assert len(set(addresses)) == 6
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", a) for a in addresses)
    for index in range(3):  # the launcher's TF_CONFIGs are valid
        assert parse_tf_config(tf_config(cluster, "worker", index))
    assert set(local_cluster(2)) == {"worker"}


@pytest.mark.parametrize("args", [(0,), (-1,), (0, 1, True)])
def test_local_cluster_rejects_empty_clusters(args):
    with pytest.raises(ValueError):
        local_cluster(*args)


# --- launch_local ---------------------------------------------------------------------------

# Every task records {"pid", "tf_config"} in OUT/<type>-<index>.json, prints a line, ignores
# SIGTERM (as a multi-worker TensorFlow task whose peer died does), then follows its plan.
TASK = r"""
import json, os, signal, socket, subprocess, sys, time
config = json.loads(os.environ["TF_CONFIG"])
name = "{type}-{index}".format(**config["task"])
out, plan = sys.argv[1], json.loads(sys.argv[2]).get(name, "exit 0")
def record(path, **data):
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)
record(os.path.join(out, name + ".json"), pid=os.getpid(), tf_config=config)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("hello from", name)
action, *args = plan.split()
if action == "exit":  # exit CODE [DELAY]
    time.sleep(float(args[1]) if len(args) > 1 else 0)
    sys.exit(int(args[0]))
if action == "hang":
    time.sleep(60)
if action == "suicide":
    time.sleep(0.3)
    os.kill(os.getpid(), signal.SIGKILL)
if action == "spawn":  # a grandchild that would outlive us, then exit CODE
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record(os.path.join(out, name + ".child.json"), pid=child.pid)
    time.sleep(0.3)
    sys.exit(int(args[0]))
if action == "listen":  # like a TensorFlow server: listen on our port, hang
    host, port = config["cluster"][config["task"]["type"]][config["task"]["index"]].rsplit(":", 1)
    server = socket.socket()
    server.bind((host, int(port)))
    server.listen()
    time.sleep(float(args[0]) if args else 60)
"""

# launch_local alone, as the CLI's --workers/--ps call it. Its module needs no TensorFlow, but
# the package's __init__ imports the engine (and TensorFlow: 4 s a launch): a bare package
# module stands in for it, so the launcher starts in a fraction of a second.
LAUNCHER = r"""
import json, os, sys, types
import tfrec_attn
package = types.ModuleType("tfrec_attn.training")
package.__path__ = [os.path.join(os.path.dirname(tfrec_attn.__file__), "training")]
sys.modules["tfrec_attn.training"] = package
from tfrec_attn.training.cluster import launch_local
sys.exit(launch_local(json.loads(sys.argv[1]), int(sys.argv[2]), **json.loads(sys.argv[3])))
"""


def alive(pid):
    """Whether a process runs (zombies, which only wait for their parent to reap them, do not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return False


def recorded(out):
    tasks = {}
    for path in glob.glob(os.path.join(out, "*.json")):
        with open(path) as f:
            tasks[os.path.basename(path)[: -len(".json")]] = json.load(f)
    return tasks


class Launch:
    def __init__(self, proc, out):
        self.proc, self.out, self.started = proc, out, time.monotonic()

    def finish(self, timeout=30):
        stdout, stderr = self.proc.communicate(timeout=timeout)
        self.elapsed = time.monotonic() - self.started
        return self.proc.returncode, stdout, stderr

    def tasks(self):
        return recorded(self.out)

    def wait_for(self, names, timeout=20):
        deadline = time.monotonic() + timeout
        while not set(names) <= set(self.tasks()):
            assert time.monotonic() < deadline, f"only {sorted(self.tasks())} started"
            time.sleep(0.05)

    def assert_no_survivors(self, timeout=3):
        pids = [t["pid"] for t in self.tasks().values()]
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if alive(p)]


@contextlib.contextmanager
def launcher(tmp_path, plan, num_workers, **kwargs):
    """Runs launch_local in a subprocess; SIGKILLs it and every task it recorded afterwards."""
    out = str(tmp_path)
    command = [sys.executable, "-c", TASK, out, json.dumps(plan)]
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps(command), str(num_workers),
                             json.dumps(kwargs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        yield Launch(proc, out)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        for task in recorded(out).values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(task["pid"], signal.SIGKILL)


def test_every_task_gets_its_own_tf_config(tmp_path):
    # The chief lives a while: with parameter servers the launcher ends the cluster when it exits.
    with launcher(tmp_path, {"chief-0": "exit 0 5"}, 3, num_ps=1, chief=True) as launch:
        code, stdout, stderr = launch.finish()
        assert code == 0, stderr
        tasks = launch.tasks()
    assert set(tasks) == {"chief-0", "worker-0", "worker-1", "worker-2", "ps-0"}
    cluster = tasks["chief-0"]["tf_config"]["cluster"]
    assert {job: len(a) for job, a in cluster.items()} == {"chief": 1, "worker": 3, "ps": 1}
    for name, task in tasks.items():
        config = task["tf_config"]
        assert config["cluster"] == cluster
        assert "{type}-{index}".format(**config["task"]) == name
        assert parse_tf_config(json.dumps(config)) == config
    assert len({t["pid"] for t in tasks.values()}) == 5
    # Output is forwarded line by line, prefixed with the task.
    assert sorted(line for line in stdout.splitlines()) == sorted(
        f"[{n.replace('-', ':')}] hello from {n}" for n in tasks)


def test_a_failing_task_kills_the_others_at_once(tmp_path):
    plan = {"worker-0": "hang", "worker-1": "exit 3 0.5", "chief-0": "hang"}
    with launcher(tmp_path, plan, 2, chief=True) as launch:
        code, _, stderr = launch.finish()
        assert code == 3
        assert launch.elapsed < 5, f"took {launch.elapsed:.1f} s; the others sleep 60 s"
        assert "worker:1 exited with code 3; killing the other 2 tasks" in stderr
        assert set(launch.tasks()) == {"chief-0", "worker-0", "worker-1"}
        launch.assert_no_survivors()


def test_a_killed_task_counts_as_failed(tmp_path):
    with launcher(tmp_path, {"worker-0": "suicide", "worker-1": "hang"}, 2) as launch:
        code, _, stderr = launch.finish()
        assert code == 128 + signal.SIGKILL
        assert "worker:0 was killed by SIGKILL" in stderr
        launch.assert_no_survivors()


def test_nothing_a_task_started_survives(tmp_path):
    with launcher(tmp_path, {"worker-0": "spawn 5", "worker-1": "hang"}, 2) as launch:
        code, _, _ = launch.finish()
        assert code == 5
        grandchild = launch.tasks()["worker-0.child"]["pid"]
        launch.assert_no_survivors()
        assert not alive(grandchild)


def test_parameter_servers_are_stopped_when_the_workers_finish(tmp_path):
    plan = {"worker-0": "exit 0 0.3", "worker-1": "exit 0 0.6", "ps-0": "hang", "ps-1": "hang"}
    with launcher(tmp_path, plan, 2, num_ps=2) as launch:
        code, _, stderr = launch.finish()
        assert code == 0, stderr
        assert launch.elapsed < 8
        assert "stopping ps:0, ps:1" in stderr
        launch.assert_no_survivors()


def test_with_parameter_servers_the_chief_coordinates(tmp_path):
    # ParameterServerStrategy: workers and ps serve forever; the job ends with the chief.
    plan = {"chief-0": "exit 0 0.5", "worker-0": "hang", "ps-0": "hang"}
    with launcher(tmp_path, plan, 1, num_ps=1, chief=True) as launch:
        code, _, stderr = launch.finish()
        assert code == 0, stderr
        assert launch.elapsed < 8
        launch.assert_no_survivors()


def test_sigterm_to_the_launcher_kills_every_task(tmp_path):
    with launcher(tmp_path, {"worker-0": "hang", "worker-1": "hang"}, 2) as launch:
        launch.wait_for({"worker-0", "worker-1"})
        launch.proc.send_signal(signal.SIGTERM)
        code, _, stderr = launch.finish(timeout=10)
        assert code == 128 + signal.SIGTERM
        assert "got SIGTERM; killing all 2 tasks" in stderr
        launch.assert_no_survivors()


def test_startup_timeout_names_the_task_that_never_listened(tmp_path):
    with launcher(tmp_path, {"worker-0": "listen", "worker-1": "hang"}, 2, startup_timeout=1.5) as launch:
        code, _, stderr = launch.finish()
        assert code == 124
        assert re.search(r"worker:1 \(127\.0\.0\.1:\d+\) did not listen within 1\.5 s", stderr), stderr
        assert "worker:0" not in stderr
        launch.assert_no_survivors()


def test_tasks_that_listen_pass_the_startup_check(tmp_path):
    with launcher(tmp_path, {"worker-0": "listen 1", "worker-1": "exit 0"}, 2, startup_timeout=10) as launch:
        code, _, stderr = launch.finish()
        assert code == 0, stderr


def test_per_task_logs(tmp_path):
    logs = tmp_path / "logs"
    with launcher(tmp_path, {}, 2, chief=True, stdout_dir=str(logs)) as launch:
        code, stdout, stderr = launch.finish()
        assert code == 0, stderr
    assert stdout == ""
    assert sorted(os.listdir(logs)) == ["chief-0.log", "worker-0.log", "worker-1.log"]
    assert (logs / "worker-1.log").read_text() == "hello from worker-1\n"


def test_in_process_launch_returns_the_code(tmp_path, capsys):
    # Quick tasks only: this one runs in the test process, with no outer timeout.
    script = ("import os, json, sys; t = json.loads(os.environ['TF_CONFIG'])['task']; "
              "sys.exit(t['index'] * 7 if os.environ['EXTRA'] == 'x' else 1)")
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    # coreutils timeout bounds each task and passes its exit code through.
    command = ["timeout", "-s", "KILL", "20", sys.executable, "-c", script]
    assert launch_local(command, 2, env={"EXTRA": "x"}) == 7
    assert "worker:1 exited with code 7" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


# --- training/k8s and training/Dockerfile ---------------------------------------------------

def load_manifests():
    docs = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def tfjobs():
    jobs = [d for d in load_manifests() if d["kind"] == "TFJob"]
    return {job["metadata"]["name"]: job for job in jobs}


def strategy_of(container):
    args = container["command"] + container["args"]
    value = args[args.index("--set") + 1]
    key, strategy = value.split("=", 1)
    assert key == "train.strategy"
    return strategy


def test_tfjobs_have_the_replica_specs_of_their_strategy():
    jobs = tfjobs()
    by_strategy = {}
    for job in jobs.values():
        assert job["apiVersion"] == "kubeflow.org/v1"
        specs = job["spec"]["tfReplicaSpecs"]
        strategies = {strategy_of(s["template"]["spec"]["containers"][0]) for s in specs.values()}
        (strategy,) = strategies  # every replica runs the same program
        by_strategy[strategy] = specs
    assert set(by_strategy) == {"multi_worker_mirrored", "parameter_server"}
    mwms, ps = by_strategy["multi_worker_mirrored"], by_strategy["parameter_server"]
    assert set(mwms) == {"Chief", "Worker"} and mwms["Chief"]["replicas"] == 1
    assert mwms["Worker"]["replicas"] >= 1
    assert set(ps) == {"Chief", "PS", "Worker"}
    assert ps["Chief"]["replicas"] == 1 and ps["PS"]["replicas"] == 2 and ps["Worker"]["replicas"] >= 1

    def gpus(spec):
        return spec["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")

    assert [gpus(mwms[r]) for r in ("Chief", "Worker")] == [1, 1]
    assert [gpus(ps[r]) for r in ("Chief", "PS", "Worker")] == [None, None, 1]  # workers compute


def test_tfjob_containers_run_the_trainer():
    pvc = {d["metadata"]["name"]: d for d in load_manifests() if d["kind"] == "PersistentVolumeClaim"}
    for name, job in tfjobs().items():
        outputs = set()
        for spec in job["spec"]["tfReplicaSpecs"].values():
            assert spec["restartPolicy"] == "OnFailure"
            pod = spec["template"]["spec"]
            (container,) = pod["containers"]
            assert container["name"] == "tensorflow"  # the TF Operator's default container
            assert container["image"] == "tfrec-attn-trainer:latest"
            assert "TF_CONFIG" not in {e["name"] for e in container.get("env", [])}  # the operator's
            args = container["command"] + container["args"]
            assert args[:2] == ["tfrec-attn", "train"]
            assert os.path.isfile(os.path.join(ROOT, args[2])), args[2]  # the image's WORKDIR is the repo
            assert strategy_of(container) in STRATEGIES
            outputs.add(args[args.index("--output-dir") + 1])
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert set(mounts) >= {"/runs", "/data"}
            for mount in mounts.values():
                assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] in pvc
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env["TFREC_ATTN_CACHE"] in mounts
        (output,) = outputs  # one run directory per job, on the shared volume
        assert output.startswith("/runs/") and output != "/runs/", (name, output)
    assert all("ReadWriteMany" in claim["spec"]["accessModes"] for claim in pvc.values())


def dockerfile_instructions():
    with open(os.path.join(ROOT, "training", "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    lines = [line.strip() for line in text.splitlines()]
    return text, [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_trainer_dockerfile():
    text, instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "tensorflow/tensorflow:2.20.0-gpu")
    with open(os.path.join(ROOT, "setup.cfg")) as f:
        pin = re.search(r"^\s*tensorflow==([\d.]+)\.\*$", f.read(), re.M).group(1)
    assert instructions[0][1].split(":")[1].startswith(pin + ".")  # the same TensorFlow as the pin
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in instructions if i == "ENV")))
    assert env["TF_USE_LEGACY_KERAS"] == "1"
    runs = " ".join(a for i, a in instructions if i == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs)
    for instruction, args in instructions:
        if instruction == "COPY":
            *sources, _ = args.split()
            assert all(os.path.exists(os.path.join(ROOT, s)) for s in sources), args
    copied = [a.split()[0] for i, a in instructions if i == "COPY"]
    assert "training/configs/" in copied and ("WORKDIR", "/app") in instructions
    user = [a for i, a in instructions if i == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert json.loads(dict(instructions)["ENTRYPOINT"]) == ["tfrec-attn"]
    assert "-t tfrec-attn-trainer:latest" in text  # the image the TFJobs run
