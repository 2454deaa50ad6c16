"""Shared by the serving tools: build exports to serve, start a server subprocess."""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import sys
import time

import tfrec_attn  # noqa: F401  (before TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml")
RANKING_CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_ranking.yaml")


def build_retrieval(item_ids, overrides=()):
    """An (untrained, seeded) retrieval model over ``item_ids`` and its vocabulary."""
    import tensorflow as tf

    from tfrec_attn.config import load_config
    from tfrec_attn.features.vocab import ItemVocabulary
    from tfrec_attn.training.retrieval import build_model

    tf.keras.utils.set_random_seed(0)
    config = load_config(CONFIG, list(overrides))
    vocabulary = ItemVocabulary(item_ids)
    return build_model(config, vocabulary), vocabulary


def build_export(base_path: str, item_ids, k: int = 10, overrides=(), model_name: str = "retrieval",
                 index: str = "brute_force", **index_options) -> str:
    """Exports an (untrained, seeded) retrieval model over ``item_ids``: serving cost does
    not depend on the weights' values, only on the architecture and the catalogue size."""
    from tfrec_attn.export import export_retrieval

    model, vocabulary = build_retrieval(item_ids, overrides)
    return export_retrieval(model, vocabulary, base_path, model_name=model_name, k=k, index=index,
                            **index_options)


def build_ranking_exports(base_path: str, item_ids, overrides=(), retrieval_overrides=(),
                          genders=("F", "M"), occupations=("other", "writer")) -> dict[str, str]:
    """Exports an (untrained, seeded) ranking model over ``item_ids`` as ``ranking`` and, with
    an (untrained, seeded) retrieval model over the same items, as ``recommend``, under
    ``base_path`` (TF Serving layout); returns ``{model name: version directory}``.

    ``overrides``: ``--set`` values for ``training/configs/ml100k_ranking.yaml`` (its
    ``export`` and ``retrieval.candidates`` give k, because and the candidates re-ranked);
    ``retrieval_overrides``: for ``ml100k_retrieval.yaml``.
    """
    import tensorflow as tf

    from tfrec_attn.config import load_config
    from tfrec_attn.export.ranking import export_ranking, export_recommend
    from tfrec_attn.features.ranking import UserFeatureEncoder
    from tfrec_attn.models import build_ranking_model

    retrieval, vocabulary = build_retrieval(item_ids, retrieval_overrides)
    config = load_config(RANKING_CONFIG, list(overrides))
    encoder = UserFeatureEncoder(list(genders), list(occupations))
    tf.keras.utils.set_random_seed(config.seed)
    ranker = build_ranking_model(config.model, config.loss, vocabulary.num_indices, user_feature_sizes=encoder.sizes)
    e, num_ratings = config.export, ranker.network.num_ratings
    ranking = export_ranking(ranker, vocabulary, encoder, base_path, model_name=e.model_name,
                             max_len=config.model.max_len, num_ratings=num_ratings,
                             explain_positions=e.explain_positions)
    recommend = export_recommend(retrieval, vocabulary, ranker, vocabulary, encoder, base_path,
                                 model_name=e.recommend_name, k=e.k, candidates=config.retrieval.candidates,
                                 because=e.because, max_len=config.model.max_len, num_ratings=num_ratings,
                                 explain_positions=e.explain_positions)
    return {e.model_name: ranking, e.recommend_name: recommend}


def movielens_ids(data_dir: str | None = None):
    from tfrec_attn.data import leave_one_out, read_movielens

    data_dir = data_dir or os.environ.get("TFREC_ATTN_DATA", os.path.join(ROOT, "..", "shared", "data", "ml-100k"))
    return leave_one_out(read_movielens(data_dir).interactions).item_vocab


class ServerProcess:
    """``tfrec-attn serve`` in a subprocess on 127.0.0.1 (a crash is visible as an exit).

    ``base_path`` None: give ``--model_config_file`` in ``extra`` instead. ``rest``: also open
    the REST port (``.rest_port``). The server's stderr goes to ``stderr`` (a path) or nowhere.
    ``memory_limit_mb``: caps the server's address space (``RLIMIT_AS``), so that a request
    asking for more memory fails inside the server instead of exhausting the machine.
    """

    def __init__(self, base_path: str | None, *extra, model_name: str = "retrieval", rest: bool = False,
                 stderr: str | None = None, memory_limit_mb: int | None = None):
        args = [sys.executable, "-m", "tfrec_attn.app.cli", "serve", "--port", "0", "--host", "127.0.0.1"]
        if base_path is not None:
            args += ["--model_name", model_name, "--model_base_path", base_path]
        if rest:
            args += ["--rest_api_port", str(free_port())]
        self._stderr = open(stderr, "w") if stderr else subprocess.DEVNULL
        limit = None if memory_limit_mb is None else functools.partial(_limit_memory, memory_limit_mb << 20)
        self.proc = subprocess.Popen([*args, *extra], stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     preexec_fn=limit)
        line = self.proc.stdout.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)(?:; REST on 127\.0\.0\.1:(\d+))?", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.ready_line = line
        self.port = int(match.group(1))
        self.rest_port = int(match.group(2)) if match.group(2) else None
        self.target = f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            if self._stderr is not subprocess.DEVNULL:
                self._stderr.close()


def _limit_memory(limit_bytes: int) -> None:
    """In the child, before exec: caps its address space."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (``--rest_api_port 0`` means "no REST")."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mb(pid: int) -> dict:
    """Current (``VmRSS``) and peak (``VmHWM``) resident memory of a process, in MB (Linux)."""
    out = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = int(value.split()[0]) / 1024
    return out


def reset_peak_rss(pid: int) -> bool:
    """Restarts a process's ``VmHWM`` from its current RSS (Linux >= 4.0); False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def wait_for(predicate, timeout: float = 60.0, every: float = 0.1) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False
