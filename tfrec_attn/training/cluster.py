"""``TF_CONFIG``: check it, and run a whole cluster of tasks on one machine.

Multi-process ``tf.distribute`` strategies (``MultiWorkerMirroredStrategy``,
``ParameterServerStrategy``) learn their place in the cluster from the ``TF_CONFIG``
environment variable, a JSON object such as::

    {"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"]},
     "task": {"type": "worker", "index": 1}}

On Kubernetes the TF Operator writes it into every pod (``training/k8s/tfjob.yaml``).
:func:`parse_tf_config` checks it before TensorFlow does, so that a typo fails at once
with one line that names the key, rather than as a worker that waits forever for a
peer. :func:`launch_local` starts one process per task on this machine.

A multi-worker task whose peer never starts, or dies, waits forever and ignores
SIGTERM, so the launcher stops tasks with SIGKILL, each in its own process group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

from tfrec_attn.errors import TfrecAttnError

JOBS = ("chief", "worker", "ps", "evaluator")
_AT_MOST_ONE = ("chief", "evaluator")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number",
               float: "a number", bool: "a boolean", type(None): "null"}


class ClusterError(TfrecAttnError, ValueError):
    """A ``TF_CONFIG`` that TensorFlow would reject or hang on. The message names the key."""


def _fail(message: str):
    raise ClusterError(f"TF_CONFIG: {message}")


def _kind(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _get(mapping: dict, key: str, where: str = ""):
    if key not in mapping:
        _fail(f"missing key '{where}{key}'")
    return mapping[key]


def _check_address(where: str, address) -> None:
    if not isinstance(address, str):
        _fail(f"{where}={address!r} must be a 'host:port' string")
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        _fail(f"{where}={address!r} has no port (expected 'host:port')")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        _fail(f"{where}={address!r}: an IPv6 host needs brackets, e.g. '[::1]:2222'")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        _fail(f"{where}={address!r} has an invalid port {port!r} (expected 1-65535)")


def parse_tf_config(text_or_env: str | Mapping[str, str] | None = None) -> dict | None:
    """Reads and validates ``TF_CONFIG``.

    It applies TensorFlow's own checks (``multi_worker_util._validate_cluster_spec``) and
    a few of its own: addresses need a port and may not repeat, ``task.index`` is required,
    and a ``ps`` job needs workers.

    Args:
        text_or_env: str | Mapping | None. The JSON text, or an environment to read
            ``TF_CONFIG`` from. The default is ``os.environ``.

    Returns:
        The parsed dict with ``cluster`` (job name -> list of ``"host:port"``) and
        ``task`` (``type``, ``index``), or None when ``TF_CONFIG`` is unset or empty
        (a single-process run).

    Raises:
        ClusterError: with a message such as
            ``TF_CONFIG: task.index=3 is out of range for job 'worker' (2 tasks)``.

    Example:
        >>> parse_tf_config('{"cluster": {"worker": ["a:1", "b:1"]},'
        ...                 ' "task": {"type": "worker", "index": 1}}')["task"]
        {'type': 'worker', 'index': 1}
    """
    if text_or_env is None or isinstance(text_or_env, Mapping):
        text = (os.environ if text_or_env is None else text_or_env).get("TF_CONFIG")
    else:
        text = text_or_env
    if text is None or not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        _fail(f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}")
    if not isinstance(config, dict):
        _fail(f"expected an object with 'cluster' and 'task', got {_kind(config)}")

    cluster = _get(config, "cluster")
    if not isinstance(cluster, dict) or not cluster:
        _fail(f"cluster must map job names to lists of 'host:port', got {_kind(cluster)} "
              f"{json.dumps(cluster)}")
    seen: dict[str, str] = {}
    for job, addresses in cluster.items():
        if job not in JOBS:
            _fail(f"cluster.{job} is not a job type (expected one of {', '.join(JOBS)})")
        if not isinstance(addresses, list) or not addresses:
            _fail(f"cluster.{job} must be a non-empty list of 'host:port' strings, got "
                  f"{json.dumps(addresses)}")
        if job in _AT_MOST_ONE and len(addresses) > 1:
            _fail(f"cluster.{job} has {len(addresses)} tasks; there can be at most one")
        for index, address in enumerate(addresses):
            where = f"cluster.{job}[{index}]"
            _check_address(where, address)
            if address in seen:
                _fail(f"{where}={address!r} is also {seen[address]}")
            seen[address] = where
    if "chief" not in cluster and "worker" not in cluster:
        _fail(f"cluster has no 'chief' or 'worker' job (jobs: {', '.join(cluster)})")
    if "ps" in cluster and "worker" not in cluster:
        _fail("cluster.ps needs a 'worker' job: parameter servers only hold variables")

    task = _get(config, "task")
    if not isinstance(task, dict):
        _fail(f"task must be an object with 'type' and 'index', got {_kind(task)}")
    task_type = _get(task, "type", "task.")
    if task_type not in JOBS:
        _fail(f"task.type={task_type!r} is not one of {', '.join(JOBS)}")
    if task_type not in cluster and task_type != "evaluator":  # a lone evaluator may stay out
        _fail(f"task.type={task_type!r} is not a job of the cluster ({', '.join(cluster)})")
    index = _get(task, "index", "task.")
    if isinstance(index, bool) or not isinstance(index, int):
        _fail(f"task.index={index!r} must be an integer, got {_kind(index)}")
    count = len(cluster.get(task_type, [None]))
    if not 0 <= index < count:
        _fail(f"task.index={index} is out of range for job {task_type!r} "
              f"({count} task{'s' if count != 1 else ''})")
    return config


def is_chief(tf_config: dict | None) -> bool:
    """Whether this task writes the run's outputs (checkpoints, exports, metrics).

    Unlike ``multi_worker_util.is_chief``, an evaluator is not a chief here: it must not
    write the training run's files.

    Args:
        tf_config: dict | None. From :func:`parse_tf_config`.

    Returns:
        True for the ``chief`` task, for worker 0 when the cluster has no chief, and for
        a single-process run (``tf_config`` None).
    """
    if tf_config is None:
        return True
    task = tf_config["task"]
    if task["type"] == "chief":
        return True
    return task["type"] == "worker" and task["index"] == 0 and "chief" not in tf_config["cluster"]


def local_cluster(num_workers: int, num_ps: int = 0, chief: bool = False,
                  host: str = "127.0.0.1") -> dict:
    """A cluster spec on free ports of this machine.

    All the ports are held at once while they are picked, so they are distinct. Another
    process may still take one before the task binds it.

    Args:
        num_workers: int. Tasks of the ``worker`` job.
        num_ps: int. Tasks of the ``ps`` job (parameter servers).
        chief: bool. Whether to add a ``chief`` task.
        host: str. An IPv4 or IPv6 address to bind.

    Returns:
        dict, e.g. ``{"chief": ["127.0.0.1:40001"], "worker": ["127.0.0.1:40002"]}``;
        empty jobs are left out.
    """
    if num_workers < 0 or num_ps < 0:
        raise ValueError(f"num_workers={num_workers} and num_ps={num_ps} must be >= 0")
    if not chief and not num_workers:
        raise ValueError("a cluster needs a chief or at least one worker")
    if num_ps and not num_workers:
        raise ValueError(f"num_ps={num_ps} needs num_workers >= 1")
    sizes = {"chief": int(chief), "worker": num_workers, "ps": num_ps}
    family, shown = (socket.AF_INET6, f"[{host}]") if ":" in host else (socket.AF_INET, host)
    sockets = []
    try:
        for _ in range(sum(sizes.values())):
            sockets.append(socket.socket(family, socket.SOCK_STREAM))
            sockets[-1].bind((host, 0))
        ports = iter([s.getsockname()[1] for s in sockets])
        return {job: [f"{shown}:{next(ports)}" for _ in range(n)] for job, n in sizes.items() if n}
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:
    """In a task, before it runs: be SIGKILLed when the launcher dies, even by SIGKILL
    (Linux ``PR_SET_PDEATHSIG``), so no worker outlives it waiting for its peers."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


class _Task:
    """One launched task: its process (leader of its own process group) and output."""

    def __init__(self, job, index, address, command, env, stdout_dir, lock):
        self.job, self.index, self.address = job, index, address
        self.name = f"{job}:{index}"
        self.code = None
        self.thread = None
        if stdout_dir:
            with open(os.path.join(stdout_dir, f"{job}-{index}.log"), "wb") as log:
                self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=_die_with_parent)
        else:
            self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=_die_with_parent)
            self.thread = threading.Thread(target=self._forward, args=(lock,), daemon=True)
            self.thread.start()

    def _forward(self, lock):
        for line in iter(self.proc.stdout.readline, b""):
            text = line.decode(errors="replace")
            with lock:
                sys.stdout.write(f"[{self.name}] {text}" + ("" if text.endswith("\n") else "\n"))
                sys.stdout.flush()
        self.proc.stdout.close()

    def poll(self) -> int | None:
        """The exit code (128 + N when killed by signal N), or None while it runs.

        The process is left unreaped (a zombie), so its process group id cannot be reused
        before :meth:`kill` (where ``os.waitid`` exists).
        """
        if self.code is None:
            if hasattr(os, "waitid"):
                info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is not None and info.si_pid:
                    exited = info.si_code == os.CLD_EXITED
                    self.code = info.si_status if exited else 128 + info.si_status
            elif self.proc.poll() is not None:
                code = self.proc.returncode
                self.code = code if code >= 0 else 128 - code
        return self.code

    def listening(self) -> bool:
        host, _, port = self.address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the task and anything it started
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self) -> None:
        self.proc.wait()
        if self.thread is not None:
            self.thread.join(timeout=5)


def _describe(code: int) -> str:
    if code > 128:
        try:
            return f"was killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


def _supervise(tasks, stop, startup_timeout, poll) -> int:
    # With parameter servers the chief is the coordinator; workers and ps serve until killed.
    coordinator = any(t.job == "ps" for t in tasks) and any(t.job == "chief" for t in tasks)
    needed = [t for t in tasks if t.job == "chief" or (t.job == "worker" and not coordinator)]
    deadline = None if startup_timeout is None else time.monotonic() + startup_timeout
    started = set()
    while True:
        if stop:
            name = signal.Signals(stop[0]).name
            print(f"launch_local: got {name}; killing all {len(tasks)} tasks", file=sys.stderr)
            return 128 + stop[0]
        for task in tasks:
            code = task.poll()
            if code:
                print(f"launch_local: {task.name} {_describe(code)}; killing the other "
                      f"{len(tasks) - 1} tasks", file=sys.stderr)
                return code
        if all(t.poll() == 0 for t in needed):
            left = [t.name for t in tasks if t.poll() is None]
            if left:
                print(f"launch_local: {', '.join(t.name for t in needed)} finished; stopping "
                      f"{', '.join(left)}", file=sys.stderr)
            return 0
        if deadline is not None and len(started) < len(tasks):
            started.update(t for t in tasks if t.poll() is not None or t.listening())
            if len(started) < len(tasks) and time.monotonic() > deadline:
                late = ", ".join(f"{t.name} ({t.address})" for t in tasks if t not in started)
                print(f"launch_local: {late} did not listen within {startup_timeout:g} s; "
                      f"killing all {len(tasks)} tasks", file=sys.stderr)
                return 124
        time.sleep(poll)


def launch_local(command: list[str], num_workers: int, *, num_ps: int = 0, chief: bool = False,
                 env: Mapping[str, str] | None = None, startup_timeout: float | None = None,
                 poll: float = 0.2, stdout_dir: str | None = None) -> int:
    """Runs ``command`` once per task of a local cluster and waits for the job to end.

    Every task gets its own ``TF_CONFIG`` and its own process group; all start together.
    The job succeeds when every chief and worker exits with 0 (when there are parameter
    servers and a chief, the chief alone: it is the coordinator, and workers and ps serve
    until stopped); the tasks still running are then killed. When any task exits non-zero
    or is killed, every process group is killed at once (SIGKILL: a multi-worker task
    whose peer died ignores SIGTERM) and its code is returned. SIGINT or SIGTERM to the
    launcher kills all tasks too. Nothing a task started outlives the call, unless it
    left its process group.

    Args:
        command: list[str]. The program every task runs, e.g.
            ``["tfrec-attn", "train", "cfg.yaml", "--output-dir", "runs/mw",
            "--set", "train.strategy=multi_worker_mirrored"]``.
        num_workers: int. Tasks of the ``worker`` job.
        num_ps: int. Parameter servers (the ``ps`` job).
        chief: bool. Whether to add a ``chief`` task.
        env: Mapping | None. Variables added to this process's environment.
        startup_timeout: float | None. Seconds within which every task must listen on its
            port (TensorFlow's server does once the strategy is built) or have exited;
            None does not check.
        poll: float. Seconds between checks.
        stdout_dir: str | None. Write each task's output to ``{job}-{index}.log`` there;
            by default it goes to stdout, each line prefixed with ``[job:index]``.

    Returns:
        int. 0 on success; else the code of the first task that failed (128 + N when
        killed by signal N), 124 when a task did not start in time, or 128 + N when the
        launcher got signal N.

    Example:
        >>> launch_local([sys.executable, "-c", "print('hi')"], 2)  # doctest: +SKIP
        [worker:0] hi
        [worker:1] hi
        0
    """
    cluster = local_cluster(num_workers, num_ps, chief)
    base_env = {**os.environ, **(env or {})}
    base_env.setdefault("PYTHONUNBUFFERED", "1")  # forward lines as they are printed
    if stdout_dir:
        os.makedirs(stdout_dir, exist_ok=True)
    stop: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda s, _: stop.append(s))
    lock = threading.Lock()
    tasks: list[_Task] = []
    try:
        for job, addresses in cluster.items():
            for index, address in enumerate(addresses):
                tf_config = json.dumps({"cluster": cluster, "task": {"type": job, "index": index}})
                tasks.append(_Task(job, index, address, command, {**base_env, "TF_CONFIG": tf_config},
                                   stdout_dir, lock))
        return _supervise(tasks, stop, startup_timeout, poll)
    finally:
        for task in tasks:
            task.kill()
        for task in tasks:
            task.reap()
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
