"""The served models are declared once, in the pipeline config's ``serve`` list: the config
checks it, TF Serving's models.config is written from it with the real protos, and the
deployment files in serving/ (models.config, the Kubernetes ConfigMap, the compose file)
are generated from it (tools/write_serving_files.py) and name the same models."""

import os
import shutil
import sys

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfrec_attn.config import ConfigError, PipelineConfig, config_from_dict, load_config
from tfrec_attn.serving.config import (
    ServingConfigError,
    model_server_config_text,
    read_model_server_config,
    write_model_server_config,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import write_serving_files  # noqa: E402

PIPELINE = os.path.join(ROOT, "training", "configs", "ml100k_pipeline.yaml")
SERVING = os.path.join(ROOT, "serving")


def pipeline(*overrides):
    return load_config(PIPELINE, list(overrides), cls=PipelineConfig)


def pairs(config) -> list[tuple[str, str]]:
    return [(m.name, m.base_path) for m in config.model_config_list.config]


def parse(text: str):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, config)
    return config


def read(name):
    with open(os.path.join(SERVING, name), encoding="utf-8") as handle:
        return handle.read()


# -- the config's list ----------------------------------------------------------------------
def test_default_serve_list_takes_each_name_from_its_stage_config():
    config = pipeline()
    assert [(m.name, m.stage) for m in config.served_models()] == [
        ("retrieval", "retrieval"), ("ranking", "ranking"), ("recommend", "recommend"), ("rating", "rating")]
    names = pipeline("retrieval.export.model_name=two_tower", "ranking.export.recommend_name=both",
                     "rating.export.model_name=stars")
    assert [m.name for m in names.served_models()] == ["two_tower", "ranking", "both", "stars"]
    # A stage this run skips is left out: the list says what may be served.
    assert [m.name for m in pipeline("two_stage=false").served_models()] == ["retrieval", "rating"]
    assert [m.name for m in pipeline("two_stage=false", "rating_model=false").served_models()] == ["retrieval"]
    # One retrieval model for known and new items: no second model for the cold-start stage.
    assert [m.name for m in pipeline("cold_start.enabled=false").served_models()] == [
        "retrieval", "ranking", "recommend", "rating"]
    assert [m.name for m in pipeline("cold_start.enabled=false", "serve=[{stage: ranking}, {stage: recommend}]")
            .served_models()] == ["ranking", "recommend"]


def test_serve_list_round_trips_through_yaml_and_dict():
    config = pipeline("serve=[{stage: recommend}, {stage: ranking}, {stage: retrieval}]")
    assert [m.name for m in config.served_models()] == ["recommend", "ranking", "retrieval"]
    again = config_from_dict(yaml.safe_load(config.to_yaml()), PipelineConfig)
    assert again.serve == config.serve and again.served_models() == config.served_models()


@pytest.mark.parametrize("lines, message", [
    (["  - stage: retrieval", "  - stage: rankin"],
     "{f}:4: serve[1].stage='rankin' must be one of retrieval, ranking, recommend, rating"),
    (["  - stage: retrieval", "  - stge: ranking"], "{f}:4: unknown key 'serve[1].stge'; did you mean 'stage'?"),
    (["  - retrieval"], "{f}:3: serve[0]='retrieval' must be a mapping (keys: stage)"),
    (["  - stage: ranking", "  - stage: recommend", "  - stage: retrieval", "  - stage: ranking"],
     "{f}:6: serve[3].stage='ranking' is listed twice (serve[0] too)"),
    (["  - stage: ranking", "  - stage: retrieval"],
     "{f}:2: serve=['ranking', 'retrieval'] must list 'recommend': the main job's serve stage asks that model "
     "(ranking.export.recommend_name)"),
    (["  - stage: ranking", "  - stage: recommend"],  # the cold-start stage adds its new item to `retrieval`
     "{f}:2: serve=['ranking', 'recommend'] must list 'retrieval': the main job's serve stage asks that model "
     "(retrieval.export.model_name)"),
])
def test_bad_serve_entries_name_their_file_and_line(tmp_path, lines, message):
    path = tmp_path / "pipeline.yaml"
    path.write_text("\n".join([f"include: {PIPELINE}", "serve:", *lines]) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), cls=PipelineConfig)
    assert str(caught.value) == message.format(f=path)


def test_serve_errors_from_set_and_colliding_export_names():
    with pytest.raises(ConfigError, match=r"^--set serve=\[\{stage: x\}\]: serve\[0\].stage='x' must be one of"):
        pipeline("serve=[{stage: x}]")
    with pytest.raises(ConfigError, match=r"^--set serve=\{stage: x\}: serve=\{'stage': 'x'\} must be a list"):
        pipeline("serve={stage: x}")
    # Two stages exporting under one name would overwrite each other's OUTPUT/export/<name>.
    with pytest.raises(ConfigError) as caught:
        pipeline("ranking.export.model_name=retrieval")
    assert str(caught.value) == ("--set ranking.export.model_name=retrieval: ranking.export.model_name='retrieval' "
                                 "is also retrieval.export.model_name; each export needs its own name "
                                 "(OUTPUT/export/<name>)")
    # ... unless the stage does not run.
    assert [m.name for m in pipeline("ranking.export.model_name=retrieval", "two_stage=false",
                                     ).served_models()] == ["retrieval", "rating"]
    with pytest.raises(ConfigError, match=r"rating.export.model_name='ranking' is also ranking.export.model_name"):
        pipeline("rating.export.model_name=ranking")
    assert [m.name for m in pipeline("rating.export.model_name=ranking", "rating_model=false").served_models()] \
        == ["retrieval", "ranking", "recommend"]


# -- the writer -------------------------------------------------------------------------------
def test_writer_output_parses_back_to_the_same_models(tmp_path):
    models = [("retrieval", "/models/retrieval"), ("ranking", str(tmp_path / "export" / "ranking")),
              ("a b", "gs://bucket/with \"quotes\"")]
    path = write_model_server_config(str(tmp_path / "models.config"), models, comment="two lines\nof comment")
    text = (tmp_path / "models.config").read_text()
    assert text.startswith("# two lines\n# of comment\nmodel_config_list {\n")
    config = parse(text)  # protobuf's own parser
    assert pairs(config) == models
    for model in config.model_config_list.config:
        assert model.model_platform == "tensorflow" and model.model_version_policy.latest.num_versions == 1
    assert pairs(read_model_server_config(path)) == models  # and the server's reader
    assert pairs(parse(model_server_config_text([]))) == []
    with pytest.raises(ServingConfigError, match=r"duplicate model names \['a', 'a'\]"):
        model_server_config_text([("a", "/m/1"), ("a", "/m/2")])
    with pytest.raises(ServingConfigError, match="every config needs name and base_path"):
        model_server_config_text([("a", "")])


# -- the deployment files ---------------------------------------------------------------------
def test_pipeline_list_and_deployment_files_name_the_same_models():
    served = [m.name for m in pipeline().served_models()]
    expected = [(name, f"/models/{name}") for name in served]
    assert pairs(parse(read("models.config"))) == expected
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(read(os.path.join("k8s", "tfserving.yaml")))}
    assert pairs(parse(docs["ConfigMap"]["data"]["models.config"])) == expected
    probe = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    assert probe == f"/v1/models/{served[-1]}"
    assert yaml.safe_load(read("docker-compose.yml"))["x-served-models"] == served


def test_committed_deployment_files_are_what_the_generator_writes():
    """Hand edits of a model list fail here: regenerate with tools/write_serving_files.py."""
    written = write_serving_files.render(write_serving_files.served_models(PIPELINE), PIPELINE, SERVING)
    for name, text in written.items():
        assert read(name) == text, f"serving/{name} is out of date: run python tools/write_serving_files.py"


def test_generator_checks_and_rewrites_the_files(tmp_path, capsys):
    serving = tmp_path / "serving"
    shutil.copytree(SERVING, serving)
    assert write_serving_files.main(["--check", "--serving-dir", str(serving)]) == 0
    args = ["--serving-dir", str(serving), "--set", "two_stage=false", "--set", "rating_model=false"]
    assert write_serving_files.main([*args, "--check"]) == 1  # the committed files serve four
    assert "out of date" in capsys.readouterr().err
    assert write_serving_files.main(args) == 0
    assert write_serving_files.main([*args, "--check"]) == 0
    expected = [("retrieval", "/models/retrieval")]
    assert pairs(read_model_server_config(str(serving / "models.config"))) == expected
    manifest = (serving / "k8s" / "tfserving.yaml").read_text()
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(manifest)}
    assert pairs(parse(docs["ConfigMap"]["data"]["models.config"])) == expected
    assert "/v1/models/retrieval" in manifest and "batching_parameters.txt: |" in manifest  # the rest is kept
    assert manifest.split("---", 1)[1] == read(os.path.join("k8s", "tfserving.yaml")).split("---", 1)[1].replace(
        "/v1/models/rating", "/v1/models/retrieval")
    compose = yaml.safe_load((serving / "docker-compose.yml").read_text())
    assert compose["x-served-models"] == ["retrieval"]
    assert compose["services"] == yaml.safe_load(read("docker-compose.yml"))["services"]
