"""The local model server as a child process (``tfrec-attn serve`` on a free loopback port):
what the main job, the benchmarks and a notebook start, query over gRPC and stop."""

from __future__ import annotations

import re
import subprocess
import sys


def start_server(model_config_file: str, poll_seconds: float = 0):
    """Serves the models of a TF Serving ``model_config_list`` file; returns ``(process,
    "127.0.0.1:PORT")`` once the server listens. ``poll_seconds``: 0 loads the versions once
    (TF Serving's meaning); > 0 polls for new ones."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfrec_attn.app.cli", "serve", "--port", "0", "--host", "127.0.0.1",
         "--model_config_file", model_config_file, "--file_system_poll_wait_seconds", str(poll_seconds)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"the model server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, f"127.0.0.1:{match.group(1)}"


def stop_server(proc) -> int:
    """Stops a :func:`start_server` process (SIGTERM, then SIGKILL after 60 s); its exit code."""
    proc.terminate()
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
