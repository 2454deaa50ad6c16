"""The deployment files in serving/ parse with the real protos / YAML and match the export."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from tfrec_attn.serving.config import (
    parse_batching_parameters,
    parse_model_server_config,
    parse_monitoring_config,
    read_batching_parameters,
    read_model_server_config,
)
from tfrec_attn.training.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVING = os.path.join(ROOT, "serving")
EXPORTED_MODEL = load_config(os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml")).export.model_name


def read(name):
    with open(os.path.join(SERVING, name)) as handle:
        return handle.read()


def test_model_config_points_at_the_export_layout():
    config = read_model_server_config(os.path.join(SERVING, "models.config"))
    (model,) = config.model_config_list.config
    assert model.name == EXPORTED_MODEL
    assert model.base_path == f"/models/{EXPORTED_MODEL}"  # /models <- OUTPUT/export
    assert model.model_version_policy.latest.num_versions == 1


def test_batching_and_monitoring_configs_parse():
    options = read_batching_parameters(os.path.join(SERVING, "batching_parameters.txt"))
    assert options.max_batch_size == 32 and options.pad_variable_length_inputs
    monitoring = parse_monitoring_config(read("monitoring.config"))
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_dockerfile_and_compose_are_consistent():
    dockerfile = read("Dockerfile")
    copied = re.search(r"^COPY (.+) /config/$", dockerfile, re.M).group(1).split()
    assert all(os.path.isfile(os.path.join(SERVING, f)) for f in copied)
    for flag in ("--model_config_file=/config/models.config",
                 "--batching_parameters_file=/config/batching_parameters.txt",
                 "--monitoring_config_file=/config/monitoring.config", "--enable_batching=true"):
        assert flag in dockerfile
    compose = yaml.safe_load(read("docker-compose.yml"))
    service = compose["services"]["tfserving"]
    source, target, mode = service["volumes"][0].rsplit(":", 2)
    assert target == "/models" and mode == "ro"
    assert source.endswith("/export}")  # OUTPUT/export holds <model_name>/<version>/
    assert {"8500:8500", "8501:8501"} == set(service["ports"])


def test_kubernetes_manifests():
    docs = list(yaml.safe_load_all(read(os.path.join("k8s", "retrieval.yaml"))))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
    data = kinds["ConfigMap"]["data"]
    # The ConfigMap holds the same configs as the files (parsed with the same protos).
    assert parse_model_server_config(data["models.config"]) == read_model_server_config(
        os.path.join(SERVING, "models.config"))
    assert parse_batching_parameters(data["batching_parameters.txt"]) == parse_batching_parameters(
        read("batching_parameters.txt"))
    assert parse_monitoring_config(data["monitoring.config"]) == parse_monitoring_config(read("monitoring.config"))
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for arg in container["args"]:
        if arg.startswith(("--model_config_file=", "--batching_parameters_file=", "--monitoring_config_file=")):
            path = arg.split("=", 1)[1]
            assert os.path.dirname(path) in mounts and os.path.basename(path) in data
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{EXPORTED_MODEL}"
    assert "/models" in mounts
    assert container["resources"]["requests"]["cpu"]  # the HPA needs a CPU request
    # TF's thread pools are sized to the pod's CPU limit, not the node's cores.
    limit = int(container["resources"]["limits"]["cpu"])
    flags = dict(a.split("=", 1) for a in container["args"])
    assert int(flags["--tensorflow_intra_op_parallelism"]) == limit
    assert int(flags["--tensorflow_inter_op_parallelism"]) == limit
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert kinds["Service"]["spec"]["selector"] == kinds["Deployment"]["spec"]["selector"]["matchLabels"]


def test_client_example_runs_against_a_server(tiny_export):
    from tfrec_attn.serving.config import single_model_config
    from tfrec_attn.serving.server import ModelServer

    server = ModelServer(single_model_config("retrieval", tiny_export[0]), port=0, host="127.0.0.1",
                         poll_wait_seconds=0).start()
    try:
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        proc = subprocess.run([sys.executable, os.path.join(SERVING, "client_example.py"), "--server",
                               f"127.0.0.1:{server.port}", "--history", "i1,i2", "-k", "4"],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = proc.stdout.splitlines()
        assert lines[0] == "model retrieval version 1"
        assert len(lines) == 5 and not {"i1", "i2"} & {line.split()[1] for line in lines[1:]}
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["models.config", "batching_parameters.txt", "monitoring.config"])
def test_config_files_reject_typos(name):
    parser = {"models.config": parse_model_server_config, "batching_parameters.txt": parse_batching_parameters,
              "monitoring.config": parse_monitoring_config}[name]
    with pytest.raises(ValueError):
        parser(read(name).replace("{", "{ typo_field: 1 ", 1))
