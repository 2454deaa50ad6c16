"""The deployment files in serving/ parse with the real protos / YAML and match the export."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tfrec_attn.config import PipelineConfig, load_config
from tfrec_attn.serving.config import (
    parse_batching_parameters,
    parse_model_server_config,
    parse_monitoring_config,
    read_batching_parameters,
    read_model_server_config,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVING = os.path.join(ROOT, "serving")
EXPORTED_MODEL = load_config(os.path.join(ROOT, "training", "configs", "ml100k_retrieval.yaml")).export.model_name
_RANKING_EXPORT = load_config(os.path.join(ROOT, "training", "configs", "ml100k_ranking.yaml")).export
_RATING_EXPORT = load_config(os.path.join(ROOT, "training", "configs", "ml100k_glocal_k.yaml")).export
# What `tfrec-attn run` exports under OUTPUT/export: retrieval (one model for known and new
# items: it reads text), ranking, recommend, rating.
EXPORTED_MODELS = [EXPORTED_MODEL, _RANKING_EXPORT.model_name, _RANKING_EXPORT.recommend_name,
                   _RATING_EXPORT.model_name]
assert [m.name for m in load_config(os.path.join(ROOT, "training", "configs", "ml100k_pipeline.yaml"),
                                    cls=PipelineConfig).served_models()] == EXPORTED_MODELS
MANIFEST = os.path.join("k8s", "tfserving.yaml")


def read(name):
    with open(os.path.join(SERVING, name)) as handle:
        return handle.read()


def test_model_config_points_at_the_export_layout():
    config = read_model_server_config(os.path.join(SERVING, "models.config"))
    models = config.model_config_list.config
    assert [m.name for m in models] == EXPORTED_MODELS == ["retrieval", "ranking", "recommend", "rating"]
    for model in models:
        assert model.base_path == f"/models/{model.name}"  # /models <- OUTPUT/export
        assert model.model_platform == "tensorflow"
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
    docs = list(yaml.safe_load_all(read(MANIFEST)))
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
    # The server opens its ports once every configured model is loaded: one probe covers all.
    served = [m.name for m in parse_model_server_config(data["models.config"]).model_config_list.config]
    assert served == EXPORTED_MODELS
    assert container["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{EXPORTED_MODELS[-1]}"
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


@pytest.fixture(scope="module")
def main_job_exports(tiny_model, tiny_bert_dir, tmp_path_factory):
    """OUTPUT/export as `tfrec-attn run` writes it: retrieval (a tower that reads text, on a
    tiny BERT), ranking and recommend (tiny, seeded, untrained) and rating (a completed matrix
    of ratings in 1-5 for three users) over the tiny catalogue."""
    import tensorflow as tf

    from tfrec_attn.export import export_retrieval
    from tfrec_attn.export.ranking import export_ranking, export_recommend
    from tfrec_attn.export.rating import export_rating_table
    from tfrec_attn.features.ranking import UserFeatureEncoder
    from tfrec_attn.models import build_retrieval_model
    from tfrec_attn.models.ranking import build_ranking_model
    from tfrec_attn.text.features import text_features

    retrieval, vocabulary = tiny_model
    text_config = load_config(None, ["model.item_tower.type=text", f"model.item_tower.encoder={tiny_bert_dir}",
                                     "model.embedding_dim=16", "model.num_blocks=1", "model.max_len=20"])
    texts = ["", ""] + [f"the {item} story" for item in vocabulary.item_ids]  # pad, OOV, then the items
    features = text_features(text_config.model.item_tower, texts, cache=False, progress=False)
    text_model = build_retrieval_model(text_config.model, text_config.loss, vocabulary.num_indices,
                                       text_features=features)
    config = load_config(None, ["recipe=ranking", "model.embedding_dim=16", "model.max_len=6"])
    encoder = UserFeatureEncoder(["F", "M"], ["other", "writer"])
    tf.keras.utils.set_random_seed(config.seed)
    ranker = build_ranking_model(config.model, config.loss, vocabulary.num_indices, user_feature_sizes=encoder.sizes)
    base = tmp_path_factory.mktemp("export")
    export_retrieval(text_model, vocabulary, str(base), model_name=EXPORTED_MODEL, k=10)
    export_ranking(ranker, vocabulary, encoder, str(base), model_name=_RANKING_EXPORT.model_name, max_len=6)
    export_recommend(retrieval, vocabulary, ranker, vocabulary, encoder, str(base),
                     model_name=_RANKING_EXPORT.recommend_name, k=5, candidates=12, max_len=6)
    completed = np.random.default_rng(0).uniform(1, 5, (vocabulary.num_indices, 3))
    export_rating_table(completed, vocabulary, ["u1", "u2", "u3"], str(base), model_name=_RATING_EXPORT.model_name)
    return str(base)


def test_models_config_serves_the_main_job_exports_and_the_readme_examples_run(main_job_exports, tiny_model, capsys):
    """models.config (/models -> the export base) serves all four; the README's gRPC block
    and REST line work against it (its MovieLens ids swapped for the tiny catalogue's)."""
    import json
    import urllib.request

    from tfrec_attn.serving.client import RecommenderClient
    from tfrec_attn.serving.server import ModelServer

    config = parse_model_server_config(read("models.config").replace('"/models/', f'"{main_job_exports}/'))
    server = ModelServer(config, port=0, host="127.0.0.1", poll_wait_seconds=0, rest_port=0).start()
    ids = {"50": "i3", "172": "i7", "133": "i1", "181": "i2", "100": "i4"}
    try:
        for name in EXPORTED_MODELS:
            with RecommenderClient(f"127.0.0.1:{server.port}", model_name=name) as client:
                assert client.status() == {1: "AVAILABLE"}
        with RecommenderClient(f"127.0.0.1:{server.port}", model_name=_RATING_EXPORT.model_name) as client:
            vocabulary = tiny_model[1]  # the fixture's completed matrix, column u2
            completed = np.random.default_rng(0).uniform(1, 5, (vocabulary.num_indices, 3))
            answer = client.ratings("u2", ["i1", "i4"])
            assert answer.known_user
            np.testing.assert_allclose(answer.ratings, completed[vocabulary.model_indices(["i1", "i4"]), 1], rtol=1e-6)
        readme = read("README.md")
        block = readme.split("<!-- recommend-client-example -->\n```python\n", 1)[1].split("```", 1)[0]
        for movielens, tiny in ids.items():
            block = block.replace(f'"{movielens}"', f'"{tiny}"')
        exec(block.replace("localhost:8500", f"127.0.0.1:{server.port}"), {})
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 5 and all(" rating " in line and " because i" in line for line in lines)
        assert not {"i3", "i7", "i1"} & {line.split()[0] for line in lines}  # never the history
        body = re.search(r"curl -d '(.+?)'", readme[readme.index("## Ranking and recommend"):]).group(1)
        for movielens, tiny in ids.items():
            body = body.replace(f'"{movielens}"', f'"{tiny}"')
        request = urllib.request.Request(f"http://127.0.0.1:{server.rest.port}/v1/models/ranking:predict",
                                         body.encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            outputs = json.loads(response.read())["outputs"]
        attention = np.array(outputs)  # a lone output: its name is dropped, as stock TF Serving does
        assert attention.shape == (1, 2, 3) and np.all(attention != 0)
    finally:
        server.stop()


def test_ranking_and_recommend_graphs_use_stock_tensorflow_ops_only(main_job_exports):
    """Every op of their graphs is registered by plain `import tensorflow` (what the stock
    tensorflow_model_server links), in a process that imports nothing else."""
    paths = [os.path.join(main_job_exports, name, "1", "saved_model.pb")
             for name in (_RANKING_EXPORT.model_name, _RANKING_EXPORT.recommend_name, _RATING_EXPORT.model_name)]
    code = (
        "import sys\n"
        "import tensorflow\n"
        "from tensorflow.core.protobuf import saved_model_pb2\n"
        "from tensorflow.python.framework import op_def_registry\n"
        f"for path in {paths!r}:\n"
        "    model = saved_model_pb2.SavedModel()\n"
        "    model.ParseFromString(open(path, 'rb').read())\n"
        "    ops = {op.name for op in model.meta_graphs[0].meta_info_def.stripped_op_list.op}\n"
        "    missing = sorted(op for op in ops if op_def_registry.get(op) is None)\n"
        "    print(path, len(ops), missing)\n"
        "    if missing or not ops:\n"
        "        sys.exit(1)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          cwd="/")
    assert proc.returncode == 0, (proc.stdout, proc.stderr[-2000:])
    assert len(proc.stdout.splitlines()) == 3, proc.stdout
