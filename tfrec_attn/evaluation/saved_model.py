"""Score an exported SavedModel through its ``serving_default`` signature.

What users get is what is measured: raw string histories in, ranked string ids out,
ranked with :meth:`tfrec_attn.evaluation.Evaluator.evaluate_topk`.

Before scoring, :func:`vocabulary_coverage` says how much of the evaluated data the model
knows: a model asked about ids outside its vocabulary ranks none of them (an unknown
target is a guaranteed miss, an unknown history is read as an empty one), so data that
does not match the model would otherwise just score 0 without a word.

Only a model whose ``serving_default`` maps ``history`` to ranked ``item_ids`` (a retrieval
export, or a ``recommend`` export: both stages in one graph) can be measured this way; any
other SavedModel, a ranking export above all, is an :class:`ExportKindError` at load time.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tfrec_attn.data.sequences import history_batch
from tfrec_attn.errors import TfrecAttnError
from tfrec_attn.evaluation.protocol import Evaluator
from tfrec_attn.evaluation.retrieval import rating_batch

# Below this fraction of known test targets the data is taken for other data than the model's.
MIN_KNOWN_TARGETS = 0.5
# What an ExportKindError says the evaluator needs.
_NEEDED = ("full-ranking evaluation (`tfrec-attn evaluate`) ranks the whole catalogue through a retrieval "
           "export's serving_default: history (string [batch, None]) -> item_ids and scores ([batch, K], "
           "best first)")


class ExportKindError(TfrecAttnError, ValueError):
    """A SavedModel whose ``serving_default`` is not ``history`` -> ``item_ids`` (not a
    retrieval or ``recommend`` export), handed to the full-ranking evaluator."""


@dataclasses.dataclass(frozen=True)
class Coverage:
    """How much of one stage's evaluation data a model knows.

    Attributes:
        stage: str. ``validation`` or ``test``.
        users: int. Evaluated users (= targets).
        unknown_targets: int. Targets whose item id is not in the model's vocabulary.
        unknown_histories: int. Histories holding no id the model knows (it answers them
            as it answers an empty history).
        catalogue: int. Items in the data.
        unknown_items: int. Of those, ids the model does not know.
        examples: tuple of str. A few unknown target ids.
    """

    stage: str
    users: int
    unknown_targets: int
    unknown_histories: int
    catalogue: int
    unknown_items: int
    examples: tuple = ()

    @property
    def mismatch(self) -> bool:
        """True when too few targets are known for the metrics to mean anything."""
        return self.users > 0 and self.users - self.unknown_targets < MIN_KNOWN_TARGETS * self.users

    def describe(self) -> str:
        """One sentence: what the model does not know (for an ``error:``/``warning:`` line)."""
        share = self.unknown_targets / self.users if self.users else 0.0
        parts = [f"{self.unknown_targets:,} of {self.users:,} {self.stage} targets ({share:.0%}) are item ids "
                 "the model does not know"
                 + (f" (e.g. {', '.join(repr(e) for e in self.examples)})" if self.examples else "")]
        if self.unknown_histories:
            parts.append(f"{self.unknown_histories:,} {self.stage} histories hold no id it knows (it answers "
                         "them as empty histories)")
        parts.append(f"{self.unknown_items:,} of the data's {self.catalogue:,} items are outside its vocabulary")
        return "; ".join(parts)


def vocabulary_coverage(known: np.ndarray, split, stage: str) -> Coverage:
    """:class:`Coverage` from ``known`` (bool [split.num_items]: the model knows that item)."""
    known = np.asarray(known, bool)
    targets = split.targets(stage)
    unknown = ~known[targets]
    empty = sum(1 for h in split.inputs(stage) if len(h) and not known[np.asarray(h, np.int64)].any())
    examples = tuple(dict.fromkeys(str(split.item_vocab[t]) for t in targets[unknown]))[:3]
    return Coverage(stage, len(targets), int(unknown.sum()), int(empty), len(known), int((~known).sum()),
                    examples)


def resolve_saved_model(path: str) -> str:
    """A SavedModel dir, or a TF Serving model dir (``.../<name>/``) -> its newest version."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    from tfrec_attn.export.saved_model import versions

    for version in reversed(versions(path)):
        candidate = os.path.join(path, str(version))
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise FileNotFoundError(f"{path}: neither a SavedModel (saved_model.pb) nor a directory of "
                            "integer versions holding one")


def load_saved_model(path: str):
    """``(version directory, loaded SavedModel)`` of a SavedModel or TF Serving model dir;
    :class:`ExportKindError` unless it is a retrieval or ``recommend`` export
    (:func:`check_retrieval_export`)."""
    import tensorflow as tf

    path = resolve_saved_model(path)
    loaded = tf.saved_model.load(path)
    check_retrieval_export(loaded, path)
    return path, loaded


def check_retrieval_export(loaded, path: str) -> None:
    """Raises :class:`ExportKindError` unless ``loaded``'s ``serving_default`` takes
    ``history`` alone and returns ``item_ids`` (what :func:`evaluate_saved_model` calls).

    The message names what the SavedModel's ``serving_default`` is instead, and for a
    ranking export (``history`` + ``candidates`` -> ``scores``) where its metrics are.
    """
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        found = ", ".join(sorted(loaded.signatures)) or "none"
        raise ExportKindError(f"{path}: no serving_default signature (signatures: {found}): {_NEEDED}")
    inputs = sorted(signature.structured_input_signature[1])
    outputs = sorted(signature.structured_outputs)
    if inputs in (["history"], ["history", "history_ratings"]) and "item_ids" in outputs:
        return  # (a rating-aware history's export also takes the events' ratings)
    found = f"its serving_default takes {', '.join(inputs) or 'nothing'} and returns {', '.join(outputs)}"
    if set(inputs) == {"candidates", "history"} and "scores" in outputs:
        raise ExportKindError(
            f"{path}: a ranking export ({found}), not a retrieval export: {_NEEDED}. A ranking model's "
            "test metrics (ranker alone and two-stage) are those `tfrec-attn train` printed, in its run's "
            "RUN_DIR/metrics.json; to measure both stages through a SavedModel, evaluate the run's "
            "recommend export (EXPORT/recommend) instead")
    raise ExportKindError(f"{path}: not a retrieval export ({found}): {_NEEDED}")


def known_items(loaded, item_ids, chunk: int = 8192) -> np.ndarray | None:
    """Which raw ``item_ids`` an exported retrieval model knows (bool array).

    Asks the ``rank`` signature, which scores ids outside the model's vocabulary -inf.
    None when the SavedModel has no ``rank`` signature (not one of our exports).
    """
    import tensorflow as tf

    if "rank" not in loaded.signatures:
        return None
    rank = loaded.signatures["rank"]
    ids = np.asarray([str(i) for i in item_ids], dtype=object)
    out = np.zeros(len(ids), bool)
    history = {"history": tf.constant([[""]])}
    if "history_ratings" in rank.structured_input_signature[1]:
        history["history_ratings"] = tf.zeros([1, 1])
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        scores = rank(**history, candidates=tf.constant(part[np.newaxis, :]))["scores"]
        out[start:start + len(part)] = ~np.isneginf(scores.numpy()[0])
    return out


def evaluate_saved_model(path: str, split, stage: str = "test", batch_size: int = 256, loaded=None) -> dict:
    """Full-ranking metrics of an export (``loaded``: the already loaded ``path``, optional)."""
    import tensorflow as tf

    if loaded is None:
        path, loaded = load_saved_model(path)
    else:
        check_retrieval_export(loaded, path)
    signature = loaded.signatures["serving_default"]
    rated = "history_ratings" in signature.structured_input_signature[1]
    position = {item: i for i, item in enumerate(split.item_vocab)}
    evaluator = Evaluator(split, stage)

    def topk(users, histories):
        inputs = {"history": tf.constant(history_batch(histories, split.item_vocab), tf.string)}
        if rated:  # the events' ratings, aligned with the history (as the in-memory protocol reads them)
            inputs["history_ratings"] = tf.constant(rating_batch(split, users, histories, inputs["history"].shape[1]))
        out = signature(**inputs)
        ids = out["item_ids"].numpy()
        return np.vectorize(lambda b: position.get(b.decode(), -1), otypes=[np.int64])(ids)

    result = evaluator.evaluate_topk(topk, batch_size=batch_size)
    result["saved_model"] = path
    return result
