"""New items for an exported retrieval model, without retraining (cold start).

``add_items(export_base, items)`` loads the newest version, embeds the new items with
its own ``embed_items`` signature (a text or hybrid item tower reads their text inside
the graph), and publishes the next version: the same model and signatures, with the new
items scored next to the catalogue. A running ``tfrec-attn serve`` (or TF Serving)
picks the version up by polling; nothing is retrained.

    tfrec-attn index add-items runs/main/export --items new_items.csv
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfrec_attn.errors import TfrecAttnError
from tfrec_attn.export.saved_model import publish_saved_model, versions
from tfrec_attn.export.signatures import (
    CANDIDATES_SPEC,
    HISTORY_RATINGS_SPEC,
    HISTORY_SPEC,
    ITEM_IDS_SPEC,
    ITEM_TEXTS_SPEC,
)
from tfrec_attn.layers.item_tower import reads_text


class AddItemsError(TfrecAttnError, ValueError):
    """The export or the new items cannot be combined (named in the message)."""


class CatalogueExtension(tf.Module):
    """A loaded retrieval export plus new items (same signatures, see
    :class:`~tfrec_attn.export.signatures.RetrievalServingModule`).

    ``serving_default`` merges the base top-K with the new items' scores (top-K of a
    union = top-K of (base top-K ∪ new)); ``rank`` scores new candidates; ``explain``,
    ``user_embedding`` and ``embed_items`` are the base's. New items in a *history* are
    unknown to the user tower until the model is retrained (ignored, like any unknown id),
    but are never recommended back to that history. A rating-aware base (its history
    signatures take ``history_ratings``) keeps that input in every one of them.

    Args:
        base: the loaded SavedModel of the newest version (``tf.saved_model.load``).
        item_ids: list of str. New ids (not in ``base.catalogue_ids``).
        vectors: float32 [n, d]. Their ``embed_items`` vectors.
    """

    def __init__(self, base, item_ids, vectors):
        super().__init__(name="retrieval")
        self.base = base
        n = len(item_ids)
        self.new_vectors = tf.Variable(np.asarray(vectors, np.float32), trainable=False, name="new_item_vectors")
        self.new_ids = tf.Variable(list(item_ids), trainable=False, dtype=tf.string, name="new_item_ids")
        self.catalogue_ids = tf.Variable(tf.concat([base.catalogue_ids, self.new_ids], 0), trainable=False,
                                         name="catalogue_ids")
        self.item_tower_type = tf.Variable(base.item_tower_type, trainable=False, name="item_tower_type")
        self.new_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(item_ids)), tf.range(n, dtype=tf.int64)), -1)
        self.rated = "history_ratings" in base.signatures["serving_default"].structured_input_signature[1]
        ratings = [HISTORY_RATINGS_SPEC] if self.rated else []
        self.serving_default = tf.function(self._serving_default, input_signature=[HISTORY_SPEC, *ratings])
        self.rank = tf.function(self._rank, input_signature=[HISTORY_SPEC, CANDIDATES_SPEC, *ratings])
        self.explain = tf.function(self._explain, input_signature=[HISTORY_SPEC, CANDIDATES_SPEC, *ratings])
        self.user_embedding = tf.function(self._user_embedding, input_signature=[HISTORY_SPEC, *ratings])

    def _history(self, history, ratings):
        """The base's history inputs (with the events' ratings for a rating-aware base)."""
        return {"history": history, "history_ratings": ratings} if self.rated else {"history": history}

    def _new_scores(self, user, ids):
        """Scores [b, ...] of ids against the new items (rows, -1 where not new)."""
        rows = self.new_rows.lookup(ids)
        vectors = tf.gather(self.new_vectors, tf.maximum(rows, 0))
        return rows, tf.einsum("bd,b...d->b...", user, vectors)

    def _serving_default(self, history, history_ratings=None):
        inputs = self._history(history, history_ratings)
        base = self.base.signatures["serving_default"](**inputs)
        user = self.base.signatures["user_embedding"](**inputs)["embedding"]
        scores = tf.matmul(user, self.new_vectors, transpose_b=True)  # [b, n]
        seen = tf.reduce_max(tf.one_hot(self.new_rows.lookup(history), tf.shape(self.new_ids)[0]), axis=1) > 0
        scores = tf.where(seen, float("-inf"), scores)
        ids = tf.broadcast_to(self.new_ids[tf.newaxis, :], tf.shape(scores))
        all_scores = tf.concat([base["scores"], scores], axis=1)
        all_ids = tf.concat([base["item_ids"], ids], axis=1)
        top, order = tf.math.top_k(all_scores, k=tf.shape(base["item_ids"])[1])
        item_ids = tf.gather(all_ids, order, batch_dims=1)
        return {"item_ids": tf.where(tf.math.is_inf(top) & (top < 0), "", item_ids), "scores": top}

    def _rank(self, history, candidates, history_ratings=None):
        inputs = self._history(history, history_ratings)
        base = self.base.signatures["rank"](**inputs, candidates=candidates)["scores"]
        user = self.base.signatures["user_embedding"](**inputs)["embedding"]
        rows, scores = self._new_scores(user, candidates)
        return {"scores": tf.where(rows >= 0, scores, base)}

    def _explain(self, history, candidates, history_ratings=None):
        return self.base.signatures["explain"](**self._history(history, history_ratings), candidates=candidates)

    def _user_embedding(self, history, history_ratings=None):
        return self.base.signatures["user_embedding"](**self._history(history, history_ratings))

    @tf.function(input_signature=[ITEM_IDS_SPEC, ITEM_TEXTS_SPEC])
    def embed_items(self, item_ids, item_texts):
        return self.base.embed_items(item_ids, item_texts)

    def signatures(self) -> dict:
        return {name: getattr(self, name).get_concrete_function()
                for name in ("serving_default", "rank", "explain", "user_embedding", "embed_items")}


def newest_version(model_dir: str) -> str:
    found = versions(model_dir)
    if not found:
        raise AddItemsError(f"{model_dir}: no exported versions (expected {model_dir}/<version>/saved_model.pb)")
    return os.path.join(model_dir, str(found[-1]))


def add_items(export_base: str, items: dict, *, model_name: str = "retrieval", batch_size: int = 256) -> str:
    """Publishes ``export_base/model_name/<newest + 1>`` with ``items`` added.

    Args:
        export_base: str. The export base path (``OUTPUT/export``).
        items: dict raw id -> :class:`~tfrec_attn.data.dataset.Item` (its ``text`` is read).

    Returns:
        The new version directory.
    """
    import tensorflow_text  # noqa: F401  (the text tower's tokenizer ops)

    source = newest_version(os.path.join(export_base, model_name))
    base = tf.saved_model.load(source)
    for name in ("embed_items", "catalogue_ids", "item_tower_type", "user_embedding", "rank"):
        if not hasattr(base, name):
            raise AddItemsError(f"{source}: has no {name!r}; export it again with this version of tfrec_attn")
    tower = base.item_tower_type.numpy().decode()
    if not reads_text(tower):
        raise AddItemsError(f"{source}: the model's item tower is 'id', which knows items only by id and cannot "
                            "place one it has never seen; train with model.item_tower.type=text or hybrid")
    known = set(base.catalogue_ids.numpy().astype(str))
    ids = list(items)
    if not ids:
        raise AddItemsError("no new items to add")
    duplicates = [i for i in ids if i in known]
    if duplicates:
        raise AddItemsError(f"{len(duplicates)} item ids are already in {source} (e.g. {duplicates[:5]}); "
                            "add-items adds new ids only")
    texts = [items[i].text for i in ids]
    vectors = np.concatenate([
        base.embed_items(item_ids=tf.constant(ids[s:s + batch_size]),
                         item_texts=tf.constant(texts[s:s + batch_size]))["embeddings"].numpy()
        for s in range(0, len(ids), batch_size)])
    module = CatalogueExtension(base, ids, vectors)
    return publish_saved_model(module, module.signatures(), export_base, model_name,
                               assets_extra_from=source)
