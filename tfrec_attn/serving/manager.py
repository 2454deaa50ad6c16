"""Loads, polls, swaps and unloads model versions like TF Serving's file-system source.

* Each model's ``base_path`` holds integer version directories; the version policy
  (``latest { num_versions }`` by default 1, ``all``, ``specific { versions }``) picks the
  ones to serve.
* Every ``poll_wait_seconds`` new versions are loaded (and warmed up) in the background;
  only then do they take traffic. Versions leaving the policy stop taking new requests
  and are unloaded once their in-flight requests finish.
* A version that fails to load (or to warm up) is logged and reported by
  ``GetModelStatus`` (state END, error code UNKNOWN, the error's first line); the
  versions already serving keep serving. Under a ``latest`` policy the next older version
  that loads takes its place, at start-up as while running, so a broken newest export is
  never an outage. A refused version is retried when any file under it changes (size,
  mtime or name), e.g. when it is repaired in place.
* At start-up every model must have a base path that exists, holds version directories,
  and has at least one version that loads; otherwise ``start`` raises
  ``ServingConfigError`` with a one-line reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

from tfrec_attn.serving.config import ServingConfigError
from tfrec_attn.serving.servable import LoadedVersion

logger = logging.getLogger(__name__)

# tensorflow.serving.ModelVersionStatus.State
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50


class ModelNotFound(LookupError):
    """Unknown model, version or label (-> NOT_FOUND)."""


@dataclasses.dataclass
class VersionStatus:
    state: int
    error_code: int = 0  # google.rpc.Code
    error_message: str = ""


class ManagedModel:
    def __init__(self, model_config):
        self.name = model_config.name
        self.base_path = model_config.base_path
        self.policy = model_config.model_version_policy
        self.labels = dict(model_config.version_labels)
        self.available: dict[int, LoadedVersion] = {}
        self.status: dict[int, VersionStatus] = {}
        self.failed: dict[int, tuple] = {}  # version -> fingerprint of the refused directory

    def on_disk(self) -> dict[int, str]:
        if not os.path.isdir(self.base_path):
            return {}
        out = {}
        for entry in os.listdir(self.base_path):
            path = os.path.join(self.base_path, entry)
            if entry.isdigit() and os.path.isfile(os.path.join(path, "saved_model.pb")):
                out[int(entry)] = path
        return out

    def wanted(self, on_disk: dict[int, str], refused=frozenset()) -> list[int]:
        """The versions the policy serves; ``latest`` skips ``refused`` ones (the next older
        version that loads takes their place)."""
        kind = self.policy.WhichOneof("policy_choice")
        versions = sorted(on_disk)
        if kind == "all":
            return versions
        if kind == "specific":
            return [v for v in versions if v in set(self.policy.specific.versions)]
        n = self.policy.latest.num_versions if kind == "latest" and self.policy.latest.num_versions else 1
        return [v for v in versions if v not in refused][-n:]


def fingerprint(path: str) -> tuple:
    """(relative name, size, mtime) of every file under a version directory: changes when
    the version is rewritten in place, which the directory's own mtime does not show."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                info = os.stat(full)
            except OSError:  # removed while we looked: the next poll sees the new state
                continue
            entries.append((os.path.relpath(full, path), info.st_size, info.st_mtime_ns))
    return tuple(entries)


class ModelManager:
    """Serves the models of a ``ModelServerConfig``.

    Args:
        config: tensorflow.serving.ModelServerConfig.
        poll_wait_seconds: float. File-system poll period (<= 0: load once, never poll).
        warmup: callable ``(LoadedVersion, PredictRequest) -> response`` replaying warmup
            records before a version takes traffic (None: no warmup).
    """

    def __init__(self, config, poll_wait_seconds: float = 1.0, warmup=None):
        self.models = {m.name: ManagedModel(m) for m in config.model_config_list.config}
        self.poll_wait_seconds = poll_wait_seconds
        self.warmup = warmup
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None
        self.listeners = []  # called after every change, e.g. to update health status

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> ModelManager:
        """Loads every model's versions; raises ``ServingConfigError`` when a model has no
        base path, no version directory, or no version that loads."""
        for model in self.models.values():
            if not os.path.isdir(model.base_path):
                raise ServingConfigError(f"model '{model.name}': base path {model.base_path} "
                                         f"{'is not a directory' if os.path.exists(model.base_path) else 'does not exist'}")
            if not model.on_disk():
                raise ServingConfigError(f"model '{model.name}': base path {model.base_path} has no "
                                         "version directories (expected <base_path>/<integer "
                                         "version>/saved_model.pb)")
        self.poll_once()
        for model in self.models.values():
            if not model.available:
                refused = "; ".join(f"version {v}: {s.error_message}" for v, s in sorted(model.status.items())
                                    if s.error_message)
                raise ServingConfigError(f"model '{model.name}': no version under {model.base_path} "
                                         f"loads ({refused or 'none wanted by its version policy'})")
        if self.poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="model-poller", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _poll_loop(self):
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # the poller must survive anything
                logger.exception("model poll failed")

    def poll_once(self) -> None:
        for model in list(self.models.values()):
            on_disk = model.on_disk()
            refused = {v for v, print_ in model.failed.items()
                       if v in on_disk and fingerprint(on_disk[v]) == print_}
            while True:  # a refused version makes room for the next older one
                wanted = model.wanted(on_disk, refused)
                pending = [v for v in wanted if v not in model.available and v not in refused]
                if not pending:
                    break
                for version in pending:
                    if not self._load(model, version, on_disk[version]):
                        refused.add(version)
            # Retire versions no longer wanted, but never the last one that works.
            keep = set(wanted) & set(model.available)
            if keep:
                for version in [v for v in model.available if v not in keep]:
                    self._retire(model, version)
        for listener in self.listeners:
            listener(self)

    def _load(self, model: ManagedModel, version: int, path: str) -> bool:
        """Loads and warms up one version; on failure records it as refused. Returns success."""
        print_ = fingerprint(path)  # before loading: a rewrite during the load is seen later
        with self._lock:
            model.status[version] = VersionStatus(LOADING)
        try:
            loaded = LoadedVersion(model.name, version, path)
            warmed = self.warmup and loaded.warmup(self.warmup)
        except Exception as error:  # broken export: refuse it, keep serving the others
            message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]
            logger.error("model %s version %d at %s failed to load: %s", model.name, version, path, message)
            with self._lock:
                model.failed[version] = print_
                model.status[version] = VersionStatus(END, 2, message)  # UNKNOWN
            return False
        with self._lock:
            model.available[version] = loaded
            model.status[version] = VersionStatus(AVAILABLE)
            model.failed.pop(version, None)
        logger.info("model %s version %d is AVAILABLE (%d warmup requests)", model.name, version,
                    warmed or 0)
        return True

    def _retire(self, model: ManagedModel, version: int) -> None:
        with self._lock:
            loaded = model.available.pop(version)
            model.status[version] = VersionStatus(UNLOADING)

        def unload():
            loaded.wait_idle()
            with self._lock:
                model.status[version] = VersionStatus(END)
            logger.info("model %s version %d unloaded", model.name, version)

        threading.Thread(target=unload, name=f"unload-{model.name}-{version}", daemon=True).start()

    # -- lookups -----------------------------------------------------------------------
    def acquire(self, model_spec) -> LoadedVersion:
        """The version a ``ModelSpec`` names, with a reference held (call ``release``)."""
        with self._lock:
            model = self.models.get(model_spec.name)
            if model is None:
                raise ModelNotFound(f"model_spec.name: model '{model_spec.name}' is not served "
                                    f"(serving: {sorted(self.models)})")
            choice = model_spec.WhichOneof("version_choice")
            if choice == "version":
                version = model_spec.version.value
            elif choice == "version_label":
                if model_spec.version_label not in model.labels:
                    raise ModelNotFound(f"model_spec.version_label: '{model_spec.version_label}' is not "
                                        f"a label of model '{model.name}'")
                version = model.labels[model_spec.version_label]
            else:
                if not model.available:
                    raise ModelNotFound(f"model '{model.name}' has no available version")
                version = max(model.available)
            loaded = model.available.get(version)
            if loaded is None:
                raise ModelNotFound(f"model_spec.version: version {version} of model '{model.name}' "
                                    f"is not available (available: {sorted(model.available)})")
            loaded.acquire()
            return loaded

    def statuses(self, name: str, version: int | None = None) -> dict[int, VersionStatus]:
        with self._lock:
            model = self.models.get(name)
            if model is None:
                raise ModelNotFound(f"model_spec.name: model '{name}' is not served")
            if version is not None:
                if version not in model.status:
                    raise ModelNotFound(f"model_spec.version: model '{name}' has no version {version}")
                return {version: model.status[version]}
            return dict(model.status)

    def all_available(self) -> bool:
        with self._lock:
            return all(m.available for m in self.models.values())
