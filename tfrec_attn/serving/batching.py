"""Server-side batching of concurrent Predict requests (TF Serving's ``--enable_batching``).

Requests for the same model version and signature wait up to ``batch_timeout_micros``
for company, are concatenated along dimension 0 (up to ``max_batch_size`` rows), run
once, and the outputs are split back. With ``pad_variable_length_inputs`` inputs whose
other dimensions differ are padded (zeros, or ``""`` for strings; our signatures treat
``""`` as padding); without it only requests of equal shapes share a batch.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future

import numpy as np

from tfrec_attn.serving.config import BatchingOptions


class QueueFull(RuntimeError):
    """The batch queue is at ``max_enqueued_batches`` (-> UNAVAILABLE, retry later)."""


class _Task:
    __slots__ = ("arrays", "rows", "future", "arrived")

    def __init__(self, arrays, rows):
        self.arrays = arrays
        self.rows = rows
        self.future = Future()
        self.arrived = time.perf_counter()


def _pad_to(array: np.ndarray, shape) -> np.ndarray:
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    fill = b"" if array.dtype == object else 0
    out = np.full((array.shape[0], *shape), fill, dtype=array.dtype)
    out[(slice(None), *(slice(0, d) for d in array.shape[1:]))] = array
    return out


def merge(tasks, pad: bool) -> dict[str, np.ndarray]:
    merged = {}
    for alias in tasks[0].arrays:
        parts = [t.arrays[alias] for t in tasks]
        if pad:
            trailing = tuple(max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim))
            parts = [_pad_to(p, trailing) for p in parts]
        merged[alias] = np.concatenate(parts, axis=0)
    return merged


class Batcher:
    """Batches calls of ``run(version, signature, arrays) -> outputs`` across threads."""

    def __init__(self, options: BatchingOptions, run):
        self.options = options
        self.run = run
        self.timeout = options.batch_timeout_micros / 1e6
        self._queues: dict[tuple, collections.deque] = {}
        self._versions: dict[tuple, object] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.batches_run = 0
        self.rows_run = 0
        self._threads = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def submit(self, version, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next((a.shape[0] for a in arrays.values() if a.ndim), 1)
        if rows == 0 or rows >= self.options.max_batch_size or any(a.ndim == 0 for a in arrays.values()):
            return self.run(version, signature, arrays)
        shapes = () if self.options.pad_variable_length_inputs else tuple(
            (k, a.shape[1:]) for k, a in sorted(arrays.items()))
        key = (id(version), signature, shapes)
        task = _Task(arrays, rows)
        with self._cond:
            queue = self._queues.setdefault(key, collections.deque())
            limit = self.options.max_enqueued_batches * self.options.max_batch_size
            if sum(t.rows for t in queue) + rows > limit:
                raise QueueFull(f"batch queue for model '{version.name}' is full; retry later")
            self._versions[key] = version
            queue.append(task)
            self._cond.notify()
        return task.future.result()

    def _take(self):
        """Blocks until a batch is due; returns (key, tasks) or None when closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.perf_counter()
                due, wait = None, None
                for key, queue in self._queues.items():
                    if not queue:
                        continue
                    rows = sum(t.rows for t in queue)
                    age = now - queue[0].arrived
                    if rows >= self.options.max_batch_size or age >= self.timeout:
                        due = key
                        break
                    remaining = self.timeout - age
                    wait = remaining if wait is None else min(wait, remaining)
                if due is not None:
                    queue = self._queues[due]
                    tasks, rows = [], 0
                    while queue and rows + queue[0].rows <= self.options.max_batch_size:
                        task = queue.popleft()
                        tasks.append(task)
                        rows += task.rows
                    return due, tasks
                self._cond.wait(wait)

    def _work(self):
        while (item := self._take()) is not None:
            key, tasks = item
            version, signature = self._versions[key], key[1]
            try:
                outputs = self.run(version, signature, merge(tasks, self.options.pad_variable_length_inputs))
            except Exception:
                # One bad request must not fail its neighbours: run them one by one.
                for task in tasks:
                    try:
                        task.future.set_result(self.run(version, signature, task.arrays))
                    except Exception as error:
                        task.future.set_exception(error)
                continue
            self.batches_run += 1
            self.rows_run += sum(t.rows for t in tasks)
            start = 0
            for task in tasks:
                task.future.set_result({k: v[start: start + task.rows] for k, v in outputs.items()})
                start += task.rows
