"""Why a ranking export scores a candidate as it does: its target attention over the history.

Everything comes from the exported SavedModel through its signatures, exactly as served:
``serving_default`` gives each candidate's score and predicted rating, ``explain`` the
attention weights ``[B, C, H]`` over the history positions as given (0 for padding, unknown
and unread items). Nothing here re-implements the model.

DIN's weights are not normalised and may be negative, so history items are ordered by
``|weight|`` and shown with their sign; ``share`` is ``weight / sum(|weights|)`` over the
history items the model read (as the ``recommend`` export's ``attention_weights``; its
``because`` items are chosen by leave-one-out score drops instead).

Which ids the model knows is asked through the same signatures: a history of one unknown id
is read as an empty history (attention 0, the empty history's score), so one small batched
request answers it for every id (history and candidates share the export's vocabulary).

Example:
    >>> from tfrec_attn.app.explain import explain
    >>> result = explain("runs/main/export/ranking", ["50", "172", "133"], ["181", "100"],
    ...                  titles={"50": "Star Wars (1977)"})
    >>> print(result.table(top=3))
    >>> result.heatmap("attention.png")
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tfrec_attn.errors import TfrecAttnError

RANKING_INPUTS = {"history", "candidates"}


class ExplainError(TfrecAttnError, ValueError):
    """The model or the request cannot be explained (the message says why and what to give)."""


@dataclasses.dataclass(frozen=True)
class HistoryWeight:
    """One history item's attention weight for one candidate.

    Attributes:
        item_id: str.
        title: str. From ``titles``, else the id.
        position: int. Index in the history as given (0 = oldest).
        weight: float. The target attention weight (signed).
        share: float. ``weight / sum(|weight|)`` over the read history items (signed).
    """

    item_id: str
    title: str
    position: int
    weight: float
    share: float


@dataclasses.dataclass(frozen=True)
class CandidateExplanation:
    """One candidate: its score, predicted rating, and history items by ``|weight|``.

    Attributes:
        item_id: str.
        title: str.
        score: float. ``serving_default``'s ``scores`` (interaction logit).
        rating: float. ``serving_default``'s ``rating`` (predicted rating).
        history: list of HistoryWeight. Largest ``|weight|`` first (ties: oldest first).
    """

    item_id: str
    title: str
    score: float
    rating: float
    history: list[HistoryWeight]


@dataclasses.dataclass
class Explanation:
    """What :func:`explain` returns.

    Attributes:
        model_path: str. The SavedModel version directory that answered.
        history: list of str. The history as given (oldest first).
        candidates: list of CandidateExplanation. Known candidates, best score first.
        columns: list of ``(position, item_id, title)``: the read history items, oldest
            first (the columns of ``weights``).
        weights: float32 array [len(candidates), len(columns)]: the ``explain`` signature's
            attention at those positions, rows in ``candidates`` order.
        unknown_history: list of str. History ids the model does not know (ignored by it).
        unknown_candidates: list of str. Candidate ids it does not know (not ranked: the
            model would score them as its out-of-vocabulary item).
        unread_history: list of str. Known history items it did not read (older than the
            newest ``model.max_len`` items).
    """

    model_path: str
    history: list[str]
    candidates: list[CandidateExplanation]
    columns: list[tuple[int, str, str]]
    weights: np.ndarray
    unknown_history: list[str]
    unknown_candidates: list[str]
    unread_history: list[str]

    @property
    def notes(self) -> list[str]:
        """Sentences about ids that are not in the table (unknown or unread)."""
        notes = []
        real = [h for h in self.history if h]
        if self.unknown_history:
            notes.append(f"{len(self.unknown_history)} of {len(real)} history ids are unknown to the model and were "
                         f"ignored: {', '.join(self.unknown_history)}")
        if self.unread_history:
            notes.append(f"{len(self.unread_history)} older history items were not read (the model reads the newest "
                         f"model.max_len items): {', '.join(self.unread_history)}")
        if self.unknown_candidates:
            notes.append(f"{len(self.unknown_candidates)} candidate ids are unknown to the model and were not ranked: "
                         f"{', '.join(self.unknown_candidates)}")
        if real and not self.columns:
            notes.append("none of the history items is read by the model: the scores are its answer for an empty "
                         "history")
        return notes

    def table(self, top: int | None = None, width: int = 40) -> str:
        """The candidates, best first, each with its ``top`` history items by ``|weight|``.

        Args:
            top: int or None. History items per candidate (None: all read ones).
            width: int. Titles are cut to this many characters.
        """
        def title(item_id, text):
            text = text if text != item_id else ""
            return _cut(f"{item_id}  {text}".rstrip(), width)

        lines = [f"ranking export {self.model_path}: {len(self.candidates)} candidate(s), best first; "
                 f"{len(self.columns)} history item(s) read",
                 f"{'rank':>4}  {'candidate':<{width}}  {'score':>9}  {'rating':>6}"]
        for rank, candidate in enumerate(self.candidates, start=1):
            lines.append(f"{rank:>4}  {title(candidate.item_id, candidate.title):<{width}}  "
                         f"{candidate.score:9.4f}  {candidate.rating:6.2f}")
            for item in candidate.history[:top]:
                lines.append(f"{'':>8}{item.weight:+9.4f}  {item.share:+7.1%}  {title(item.item_id, item.title)}")
        if not self.candidates:
            lines.append("(no candidate is known to the model)")
        return "\n".join(lines)

    def to_dict(self, top: int | None = None) -> dict:
        """JSON-ready: the model, the candidates with their ``top`` history items, the notes."""
        return {"model": self.model_path,
                "candidates": [{"item_id": c.item_id, "title": c.title, "score": c.score, "rating": c.rating,
                                "history": [dataclasses.asdict(h) for h in c.history[:top]]}
                               for c in self.candidates],
                "unknown_history": self.unknown_history, "unknown_candidates": self.unknown_candidates,
                "unread_history": self.unread_history, "notes": self.notes}

    def heatmap(self, path: str, title: str | None = None, max_label: int = 28) -> str:
        """Writes candidates × read history items (oldest → newest) as a PNG; returns ``path``."""
        from tfrec_attn.app.plots import attention_heatmap

        if not self.candidates or not self.columns:
            raise ExplainError(f"{path}: nothing to plot ({len(self.candidates)} known candidate(s), "
                               f"{len(self.columns)} read history item(s))")
        rows = [f"{_cut(c.title, max_label - 10)} ({c.score:+.2f})" for c in self.candidates]  # score kept
        cols = [text for _, _, text in self.columns]
        return attention_heatmap(self.weights, rows, cols, path, max_label=max_label,
                                 title=title or "Target attention of each candidate (best score first) over the history")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _describe(specs: dict) -> str:
    def shape(spec):
        return "[" + ", ".join("?" if d is None else str(d) for d in spec.shape.as_list()) + "]"

    return ", ".join(f"{name} {spec.dtype.name} {shape(spec)}" for name, spec in sorted(specs.items()))


def check_ranking_export(loaded, path: str) -> None:
    """Raises :class:`ExplainError` unless ``loaded`` has a ranking export's signatures
    (``explain`` -> ``attention`` [B, C, H]; ``serving_default`` -> ``scores``, ``rating``)."""
    signatures = loaded.signatures
    fix = "`explain` needs a ranking export (export_ranking writes BASE/ranking/<version>)"
    if "explain" not in signatures:
        raise ExplainError(f"{path}: has no `explain` signature (it has {', '.join(sorted(signatures))}; a recommend "
                           f"export returns its explanations as because_ids/because_drops); {fix}")
    outputs = signatures["explain"].structured_outputs
    attention = outputs.get("attention")
    if set(outputs) != {"attention"} or attention.shape.rank != 3:
        raise ExplainError(f"{path}: its `explain` signature returns {_describe(outputs)}, not attention float32 "
                           f"[B, C, H] (a retrieval export?); {fix}")
    serving = signatures.get("serving_default")
    inputs = serving.structured_input_signature[1] if serving is not None else {}
    if serving is None or not {"scores", "rating"} <= set(serving.structured_outputs) or set(inputs) != RANKING_INPUTS:
        raise ExplainError(f"{path}: its `serving_default` signature does not take history, candidates and return "
                           f"scores, rating; {fix}")


def resolve_ranking_export(path: str) -> str:
    """A SavedModel dir, a TF Serving model dir (newest version), or an export base holding
    ``ranking/`` -> the version directory (FileNotFoundError if none)."""
    from tfrec_attn.evaluation.saved_model import resolve_saved_model

    try:
        return resolve_saved_model(path)
    except FileNotFoundError:
        if os.path.isdir(os.path.join(path, "ranking")):
            return resolve_saved_model(os.path.join(path, "ranking"))
        raise


class RankingExplainer:
    """A loaded ranking export that explains requests (load once, explain many).

    Args:
        path: str. A SavedModel version directory, a TF Serving model base path
            (``.../ranking``: its newest version) or an export base holding ``ranking/``.

    Raises:
        FileNotFoundError: no SavedModel at ``path``.
        ExplainError: the SavedModel is not a ranking export.
    """

    def __init__(self, path: str):
        import tensorflow as tf

        self.path = resolve_ranking_export(path)
        self.loaded = tf.saved_model.load(self.path)
        check_ranking_export(self.loaded, self.path)

    def _run(self, history: np.ndarray, candidates: np.ndarray):
        import tensorflow as tf

        inputs = {"history": tf.constant(history, tf.string), "candidates": tf.constant(candidates, tf.string)}
        scored = self.loaded.signatures["serving_default"](**inputs)
        attention = self.loaded.signatures["explain"](**inputs)["attention"]
        return scored["scores"].numpy(), scored["rating"].numpy(), attention.numpy()

    def known(self, ids, probe: str) -> dict[str, bool]:
        """Which ids the model knows: a history of one unknown id is read as the empty history
        (attention 0 and the empty history's score for the ``probe`` candidate)."""
        unique = list(dict.fromkeys(i for i in ids if i))
        if not unique:
            return {}
        rows = np.array([[i] for i in unique] + [[""]], dtype=object)
        scores, _, attention = self._run(rows, np.full((len(rows), 1), probe, dtype=object))
        empty = scores[-1, 0]
        return {item: bool(attention[row, 0, 0] != 0 or not np.isclose(scores[row, 0], empty, rtol=1e-6, atol=1e-7))
                for row, item in enumerate(unique)}

    def explain(self, history, candidates, titles: dict[str, str] | None = None) -> Explanation:
        """Scores ``candidates`` after ``history`` and explains each by its target attention.

        Args:
            history: list of str. Item ids, oldest first (``""`` = padding, ignored).
            candidates: list of str. At least one id (``""`` are dropped).
            titles: dict str -> str or None. Display titles (default: the ids).
        """
        history = [str(h) for h in history]
        candidates = [str(c) for c in candidates if str(c)]
        if not candidates:
            raise ExplainError("candidates: the candidate list is empty; give at least one item id")
        titles = titles or {}
        known = self.known(history + candidates, probe=candidates[0])
        row = history if history else [""]
        scores, rating, attention = self._run(np.array([row], dtype=object), np.array([candidates], dtype=object))
        scores, rating, attention = scores[0], rating[0], attention[0][:, :len(history)]
        real = [j for j, h in enumerate(history) if h and known[h]]
        read = [j for j in real if np.any(attention[:, j] != 0)]
        ranked = [c for c in np.argsort(-scores, kind="stable") if known[candidates[c]]]
        explained = []
        for c in ranked:
            weights = attention[c, read]
            total = float(np.sum(np.abs(weights)))
            items = [HistoryWeight(history[read[j]], titles.get(history[read[j]], history[read[j]]), read[j],
                                   float(weights[j]), float(weights[j] / total) if total else 0.0)
                     for j in np.argsort(-np.abs(weights), kind="stable")]
            explained.append(CandidateExplanation(candidates[c], titles.get(candidates[c], candidates[c]),
                                                  float(scores[c]), float(rating[c]), items))
        return Explanation(
            model_path=self.path, history=history, candidates=explained,
            columns=[(j, history[j], titles.get(history[j], history[j])) for j in read],
            weights=attention[np.ix_(ranked, read)].astype(np.float32) if ranked and read
            else np.zeros((len(ranked), len(read)), np.float32),
            unknown_history=list(dict.fromkeys(h for h in history if h and not known[h])),
            unknown_candidates=list(dict.fromkeys(c for c in candidates if not known[c])),
            unread_history=[history[j] for j in real if j not in set(read)])


def explain(model_path: str, history, candidates, titles: dict[str, str] | None = None) -> Explanation:
    """Loads the ranking export at ``model_path`` and explains one request.

    Args:
        model_path: str. A SavedModel version directory, a TF Serving model base path (its
            newest version) or an export base holding ``ranking/``.
        history: list of str. Item ids, oldest first.
        candidates: list of str. Item ids to score (at least one).
        titles: dict str -> str or None. Display titles (default: the ids).

    Returns:
        Explanation. Candidates best first, each with its history items by ``|weight|``.

    Example:
        >>> explain("runs/main/export/ranking", ["50", "172"], ["181", "100"]).table()
    """
    return RankingExplainer(model_path).explain(history, candidates, titles)
