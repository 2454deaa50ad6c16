"""The catalogue's text features from a frozen encoder, computed once and cached on disk.

The frozen text tower's fast path: every item text goes through BERT once; training reads
the features from a table. The cache key covers the encoder (directory, weights file size
and time), how it reads (max tokens, pooling) and every text, so a changed title or model
recomputes, and an unchanged one loads in milliseconds.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from tfrec_attn.text.pretrained import WEIGHT_FILES, resolve_model_dir


def _key(model_dir: str, max_tokens: int, pooling: str, texts) -> str:
    digest = hashlib.sha256()
    digest.update(os.path.realpath(model_dir).encode())
    for name in WEIGHT_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            stat = os.stat(path)
            digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    digest.update(f"{max_tokens}:{pooling}:{len(texts)}".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()[:32]


def build_encoder(item_tower_config, model_dir: str | None = None):
    """The frozen :class:`~tfrec_attn.text.encoder.TextEncoder` a config names."""
    from tfrec_attn.text.encoder import TextEncoder

    c = item_tower_config
    return TextEncoder(model_dir or resolve_model_dir(c.encoder), c.max_tokens, c.pooling, name="text_encoder")


def text_features(item_tower_config, texts, *, cache: bool = True, progress: bool = True,
                  encoder=None) -> np.ndarray:
    """float32 [len(texts), hidden] of the config's encoder over ``texts``.

    Args:
        item_tower_config: ItemTowerConfig (``encoder``, ``max_tokens``, ``pooling``).
        texts: list of str.
        cache: bool. Read/write ``$TFREC_ATTN_CACHE/text_features/<key>.npy``.
        encoder: an already built TextEncoder for this config (saves its 5-10 s build).
    """
    from tfrec_attn.data.download import cache_dir

    texts = list(texts)
    model_dir = encoder.model_dir if encoder is not None else resolve_model_dir(item_tower_config.encoder)
    path = os.path.join(cache_dir(), "text_features",
                        _key(model_dir, item_tower_config.max_tokens, item_tower_config.pooling, texts) + ".npy")
    if cache and os.path.isfile(path):
        return np.load(path)
    from tfrec_attn.text.encoder import encode_texts

    encoder = encoder or build_encoder(item_tower_config, model_dir)
    features = encode_texts(encoder, texts, progress="item texts" if progress else None)
    if cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npy"
        np.save(tmp, features)
        os.replace(tmp, path)
    return features
