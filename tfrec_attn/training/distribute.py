"""Which ``tf.distribute`` strategy a run uses, and what each task of a cluster may do.

``train.strategy``:

* ``auto``: ``MirroredStrategy`` when more than one GPU is visible, else one device.
* ``one_device``: TensorFlow's default strategy: the first GPU, else the CPU.
* ``mirrored``: ``MirroredStrategy`` over every local GPU (or the logical CPUs configured
  with :func:`split_cpu`, which is how the tests run it without a GPU).
* ``multi_worker_mirrored``: ``MultiWorkerMirroredStrategy``; the cluster comes from
  ``TF_CONFIG`` (checked by :func:`tfrec_attn.training.cluster.parse_tf_config`).
* ``parameter_server``: ``ParameterServerStrategy`` (chief = coordinator; ``ps`` and
  ``worker`` tasks run a ``tf.distribute.Server``). Embedding tables are sharded over the
  parameter servers (``MinSizePartitioner``).
* ``tpu``: ``TPUStrategy`` through ``TPUClusterResolver`` (wired, untested here).

Only the chief writes the run directory; other workers write their copies of
checkpoints and logs to a temporary directory, as the Keras multi-worker guide does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from tfrec_attn.config.sections import STRATEGIES

logger = logging.getLogger(__name__)


def split_cpu(count: int) -> None:
    """Makes the CPU appear as ``count`` logical devices (before TensorFlow initialises),
    so ``MirroredStrategy`` runs ``count`` replicas without a GPU."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def make_strategy(name: str, *, tf_config: dict | None = None, communication_timeout: float = 0.0):
    """The ``tf.distribute.Strategy`` named by ``train.strategy`` (see module docstring)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    gpus = tf.config.list_physical_devices("GPU")  # (logical ones would start the runtime:
    # multi-worker collectives must be configured before that)
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "one_device"
    if name == "one_device":  # the default strategy: the first GPU, else the CPU (and every
        return tf.distribute.get_strategy()  # Keras callback supports it, BackupAndRestore included)
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multi_worker_mirrored":
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=communication_timeout or None)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if name == "parameter_server":
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        num_ps = len((tf_config or {}).get("cluster", {}).get("ps", [])) or 1
        partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=64 << 10, max_shards=num_ps)
        return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_parameter_server(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def is_chief(strategy) -> bool:
    """True on the task that writes the run directory (always, without a cluster); the rule
    is :func:`tfrec_attn.training.cluster.is_chief`'s, applied to the strategy's cluster."""
    from tfrec_attn.training.cluster import is_chief as task_is_chief

    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not cluster:
        return True
    return task_is_chief({"cluster": cluster, "task": {"type": resolver.task_type, "index": resolver.task_id}})


def task_dir(output_dir: str, strategy) -> str:
    """``output_dir`` on the chief; ``output_dir/workers/<task>`` for every other task: its
    copies of checkpoints and logs, which Keras' multi-worker saving needs every worker to
    write, never mixed with the chief's."""
    if is_chief(strategy):
        return output_dir
    resolver = strategy.cluster_resolver
    return os.path.join(output_dir, "workers", f"{resolver.task_type}-{resolver.task_id}")


def broadcast_from_chief(strategy, values):
    """Every replica gets the chief's ``values`` (float vector): the chief alone computes
    the validation metrics, every worker must take the same early-stopping decision."""
    import numpy as np
    import tensorflow as tf

    values = np.asarray(values, np.float64)
    if strategy.num_replicas_in_sync <= 1 or is_parameter_server(strategy):
        return values
    local = tf.constant(values if is_chief(strategy) else np.zeros_like(values))
    result = strategy.run(_share_function(strategy), args=(local,))
    return strategy.experimental_local_results(result)[0].numpy()


_SHARE = {}


def _share_function(strategy):
    """One traced all-reduce per strategy (a new tf.function per call would retrace every epoch)."""
    import tensorflow as tf

    if id(strategy) not in _SHARE:
        @tf.function
        def share(local):
            context = tf.distribute.get_replica_context()
            first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), local.dtype)
            return context.all_reduce(tf.distribute.ReduceOp.SUM, local * first)

        _SHARE[id(strategy)] = share
    return _SHARE[id(strategy)]


_WATCHER = r"""
import json, os, select, signal, socket, sys
pid, timeout, config = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
if select.select([sys.stdin], [], [], timeout)[0]:
    sys.exit(0)  # disarmed, or the task ended (end of file)
task, down = config.get("task", {}), []
for job, addresses in config.get("cluster", {}).items():
    for index, address in enumerate(addresses):
        if job == task.get("type") and index == task.get("index"):
            continue
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        except OSError:
            down.append(f"{job}:{index} ({address})")
detail = "unreachable: " + ", ".join(down) if down else "every peer accepts connections"
print(f"error: the cluster did not train a step within train.peer_timeout_seconds={timeout:g} "
      f"({detail}); stopping this task", file=sys.stderr, flush=True)
os.kill(pid, signal.SIGKILL)
"""


class PeerWatchdog:
    """Ends this task with a clear error if the cluster has not trained its first step
    within ``timeout`` seconds: a ``MultiWorkerMirroredStrategy`` task whose peer never
    starts blocks inside TensorFlow (holding the GIL) and ignores SIGTERM, so the watch runs
    in a small separate process that SIGKILLs the task and names the unreachable peers.

    Args:
        tf_config: dict. The parsed ``TF_CONFIG`` (names the peers to report).
        timeout: float. Seconds; 0 disables the watchdog.
    """

    def __init__(self, tf_config: dict | None, timeout: float):
        self.tf_config = tf_config
        self.timeout = timeout
        self._watcher = None

    def __enter__(self):
        if self.tf_config and self.timeout > 0 and self._watcher is None:
            self._watcher = subprocess.Popen(
                [sys.executable, "-c", _WATCHER, str(os.getpid()), str(self.timeout), json.dumps(self.tf_config)],
                stdin=subprocess.PIPE)
        return self

    def disarm(self) -> None:
        """The cluster is up: stop watching."""
        if self._watcher is not None and self._watcher.poll() is None:
            try:
                self._watcher.stdin.write(b"up\n")
                self._watcher.stdin.close()
            except OSError:
                pass
            self._watcher.wait()
        self._watcher = None

    def __exit__(self, *exc):
        self.disarm()


def first_step_callback(watchdog: PeerWatchdog, per_batch: bool = True):
    """A Keras callback that tells the watchdog the cluster is up: at the first step, or
    (``per_batch=False``: parameter-server training allows no batch hooks) the first epoch."""
    import tensorflow as tf

    class _FirstEpoch(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            watchdog.disarm()

    class _FirstStep(_FirstEpoch):
        def on_train_batch_end(self, batch, logs=None):
            watchdog.disarm()

    return _FirstStep() if per_batch else _FirstEpoch()


def run_server(tf_config: dict) -> int:
    """A ``ps`` or ``worker`` task of ``ParameterServerStrategy``: serve until stopped."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id, protocol=resolver.rpc_layer or "grpc",
                                  start=True)
    print(f"{resolver.task_type}:{resolver.task_id} serving the parameter-server cluster", flush=True)
    server.join()
    return 0
