"""Writes the served-model lists of the deployment files in serving/ from the pipeline
config's ``serve`` list (:class:`tfrec_attn.config.pipeline.ServedModelConfig`), so the
models are declared once:

* ``serving/models.config``: the ``ModelServerConfig`` (protos + ``text_format``, through
  :func:`tfrec_attn.serving.config.model_server_config_text`), ``/models/<name>`` each;
* ``serving/k8s/tfserving.yaml``: the ConfigMap's ``models.config``, the header and the
  readiness probe's model;
* ``serving/docker-compose.yml``: its header and ``x-served-models`` (the list of what the
  image's ``/config/models.config`` serves; compose ignores ``x-`` keys).

Everything else in those files is kept as it is.

    python tools/write_serving_files.py            # rewrites the files in serving/
    python tools/write_serving_files.py --check    # exit 1 when one is out of date
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap

import yaml

import tfrec_attn  # noqa: F401  (before TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "training", "configs", "ml100k_pipeline.yaml")
SERVING = os.path.join(ROOT, "serving")
MODELS_CONFIG = "models.config"
MANIFEST = os.path.join("k8s", "tfserving.yaml")
COMPOSE = "docker-compose.yml"
MOUNT = "/models"  # the export base (OUTPUT/export) inside the container


def served_models(config_path: str = CONFIG, overrides=()):
    """The pipeline config's served models (``PipelineConfig.served_models``)."""
    from tfrec_attn.config import PipelineConfig, load_config

    return load_config(config_path, list(overrides), cls=PipelineConfig).served_models()


def base_paths(models) -> list[tuple[str, str]]:
    """``(name, /models/<name>)``: the export layout, OUTPUT/export mounted at /models."""
    return [(model.name, f"{MOUNT}/{model.name}") for model in models]


def _names(models) -> str:
    names = [model.name for model in models]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _comment(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.splitlines())


def _source(config_path: str) -> str:
    return (f"Written by tools/write_serving_files.py from the `serve` list of "
            f"{os.path.relpath(config_path, ROOT)}: change that list (or a model's name in its "
            "stage's config) and rerun it; do not edit the model list here.")


def models_config(models, config_path: str = CONFIG) -> str:
    """``serving/models.config``: a comment naming each model, then the text proto."""
    from tfrec_attn.serving.config import model_server_config_text

    width = max(len(model.name) for model in models) + 1 if models else 0
    described = "\n".join(textwrap.fill(model.description, 92, initial_indent=f"  {model.name + ':':<{width}} ",
                                        subsequent_indent=" " * (width + 3), break_on_hyphens=False)
                          for model in models)
    comment = "\n".join([
        "tensorflow.serving.ModelServerConfig (text format) for `--model_config_file`.",
        textwrap.fill(_source(config_path), 92, break_on_hyphens=False),
        "base_path is a directory of integer versions, exactly what `tfrec-attn run` / `train` /",
        f"`export` write under OUTPUT/export/<model_name>/ (mounted at {MOUNT}).",
        described,
        "Serve the newest version of each; a new version takes traffic once loaded and warmed up,",
        "then the previous one is unloaded after its in-flight requests finish."])
    return model_server_config_text(base_paths(models), comment)


def _replace(pattern: str, replacement: str, text: str, what: str, path: str) -> str:
    new, count = re.subn(pattern, lambda _: replacement, text, count=1, flags=re.M)
    if count != 1:
        raise SystemExit(f"{path}: cannot find {what} to rewrite (pattern {pattern!r})")
    return new


def manifest(current: str, models, config_path: str = CONFIG) -> str:
    """``serving/k8s/tfserving.yaml`` with its header, ConfigMap ``models.config`` and readiness
    probe rewritten for ``models``."""
    from tfrec_attn.serving.config import model_server_config_text

    path = os.path.join("serving", MANIFEST)
    header = _comment("\n".join([
        "kubectl apply -f serving/k8s/tfserving.yaml",
        *textwrap.wrap(f"One TF Serving deployment serves the models of the ConfigMap's models.config: "
                       f"{_names(models)}. Models live on a volume laid out as {MOUNT}/<model_name>/<version>/ "
                       "(the export layout, OUTPUT/export); copying a new version directory there rolls it out "
                       "(see serving/README.md).", 92, break_on_hyphens=False),
        *textwrap.wrap(_source(config_path), 92, break_on_hyphens=False)]))
    text = _replace(r"\A(?:#.*\n)*", header, current, "the header comment", path)
    block = textwrap.indent(model_server_config_text(base_paths(models)), " " * 4)
    text = _replace(r"(?<=^  models\.config: \|\n)(?:    .*\n|\n)+", block, text, "the ConfigMap's models.config",
                    path)
    if models:
        text = _replace(r"(?<=httpGet: \{path: /v1/models/)[^,}\s]+", models[-1].name, text,
                        "the readiness probe's model", path)
    return text


def compose(current: str, models, config_path: str = CONFIG) -> str:
    """``serving/docker-compose.yml`` with its header and ``x-served-models`` rewritten."""
    path = os.path.join("serving", COMPOSE)
    header = _comment("\n".join([
        "docker compose -f serving/docker-compose.yml up --build",
        *textwrap.wrap(f"Serves OUTPUT/export (default ../runs/main/export) on gRPC :8500 and REST :8501: the "
                       f"models of serving/models.config (in the image at /config), {_names(models)}, from "
                       "OUTPUT/export/<model_name>/<version>/ (`tfrec-attn run` writes them all).", 92,
                       break_on_hyphens=False),
        *textwrap.wrap(f"x-served-models: what that file serves (compose ignores x- keys). {_source(config_path)}",
                       92, break_on_hyphens=False)]))
    listed = "x-served-models: " + yaml.safe_dump([m.name for m in models], default_flow_style=True).strip() + "\n"
    body = re.sub(r"\A(?:#.*\n)*(?:x-served-models:.*\n)?", "", current, count=1)
    if not body.startswith("services:"):
        raise SystemExit(f"{path}: expected the header comment and x-served-models before 'services:'")
    return header + listed + body


def render(models, config_path: str = CONFIG, serving_dir: str = SERVING) -> dict[str, str]:
    """``{path under serving_dir: its new text}`` for the three files."""

    def read(name):
        with open(os.path.join(serving_dir, name), encoding="utf-8") as handle:
            return handle.read()

    return {MODELS_CONFIG: models_config(models, config_path),
            MANIFEST: manifest(read(MANIFEST), models, config_path),
            COMPOSE: compose(read(COMPOSE), models, config_path)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=CONFIG, help="the pipeline config (recipe: pipeline)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--serving-dir", default=SERVING)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    models = served_models(args.config, args.overrides)
    stale = []
    for name, text in render(models, args.config, args.serving_dir).items():
        path = os.path.join(args.serving_dir, name)
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                continue
        stale.append(path)
        if not args.check:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
    verb = "out of date" if args.check else "written"
    print(f"{verb}: {', '.join(stale)}" if stale else "up to date", file=sys.stderr if args.check and stale
          else sys.stdout)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
