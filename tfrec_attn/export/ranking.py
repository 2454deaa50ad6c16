"""Ranking and ``recommend`` (retrieval + ranking in one graph) serving exports.

Both take raw string ids and stock TensorFlow ops only (brute-force retrieval), so the
stock ``tensorflow/serving`` binary serves them. Every signature comes in two forms:

* by ids only (``serving_default``, ``explain``): the history's ratings and times and the
  user's features are unknown (the model trained with such rows:
  ``model.event_feature_dropout``);
* ``with_features`` (``explain_with_features`` for the ranking model): the same plus
  ``history_ratings`` float32 [B, H] (0 or NaN = unknown), ``history_timestamps`` int64
  [B, H] (seconds; 0 = unknown), and the user's ``user_age`` int64 [B] (0 = unknown),
  ``user_gender``, ``user_occupation``, ``user_zip`` string [B] (``""`` = unknown).

History: string [B, H], oldest first, ``""`` = padding; ids the model does not know are
ignored (never an error); the newest ``model.max_len`` items are read. Candidates:
string [B, C], C >= 1; an unknown candidate is scored as the OOV item.
"""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.export.signatures import CANDIDATES_SPEC, HISTORY_SPEC, check_ratings
from tfrec_attn.export.signatures import check_input as _check
from tfrec_attn.features.ranking import NUM_GAP_BUCKETS, event_gap_ids, event_rating_ids
from tfrec_attn.features.vocab import ItemVocabulary, history_rows, is_item

FEATURE_SPECS = [
    tf.TensorSpec([None, None], tf.float32, name="history_ratings"),
    tf.TensorSpec([None, None], tf.int64, name="history_timestamps"),
    tf.TensorSpec([None], tf.int64, name="user_age"),
    tf.TensorSpec([None], tf.string, name="user_gender"),
    tf.TensorSpec([None], tf.string, name="user_occupation"),
    tf.TensorSpec([None], tf.string, name="user_zip"),
]


# What one request may make the graph hold (elements), beyond which it is INVALID_ARGUMENT
# rather than an allocation the server cannot make: rows x candidates x history positions
# (the attention mapped back to the input, the leave-one-out's copies of the history), and
# rows x candidates x history items read (the target attention's [B, C, H, units] activations).
MAX_POSITIONS = 1 << 24
MAX_READ = 1 << 23


class RankingServingModule(tf.Module):
    """What a ranking export serves.

    Signatures:
        ``serving_default``: ``history`` [B, H], ``candidates`` [B, C] -> ``scores`` float32
            [B, C] (interaction logits: higher = more likely) and ``rating`` float32 [B, C]
            (predicted rating).
        ``explain``: same inputs -> ``attention`` float32 [B, C, H]: each candidate's target
            attention over the history positions as given (0 for padding, unknown and
            truncated items).
        ``with_features`` / ``explain_with_features``: the same with the history's ratings
            and times and the user's features (module docstring).
        ``leave_one_out_drops``: same inputs -> ``drops`` float32 [B, C, H]: how much each
            candidate's score falls when that history item is removed (computed for its
            ``explain_positions`` items of largest attention; 0 elsewhere).

    Args:
        model: RankingModel (trained).
        vocabulary: ItemVocabulary (in the graph).
        user_encoder: UserFeatureEncoder (in the graph).
        max_len: int. History items read (the newest).
        num_ratings: int. The model's rating ids (0: it reads no ratings).
        explain_positions: int. M, the history items re-scored without, per candidate.
        retrieval: :class:`~tfrec_attn.evaluation.retrieval.Retriever` or None. The frozen
            retrieval model a ranker that reads retrieval (``network.retrieval_dim``) trained
            with: in the graph, its query vectors for the history are the ranker's
            ``retrieval_query`` (so a leave-one-out re-scoring recomputes them too).
    """

    def __init__(self, model, vocabulary: ItemVocabulary, user_encoder, max_len: int, num_ratings: int,
                 explain_positions: int = 10, retrieval=None):
        super().__init__(name="ranking")
        self.explain_positions = int(explain_positions)
        # The network and the blend weight, not the tfrs.Model (its tasks are training-only).
        self.network = model.network
        self.lookup = vocabulary.lookup_layer()
        self.user_encoder = user_encoder
        self.max_len = int(max_len)
        self.num_ratings = int(num_ratings)
        self.num_user_features = len(model.network.user_feature_sizes)
        self.retrieval_weight = model.retrieval_weight
        if bool(model.network.retrieval_dim) != (retrieval is not None):
            raise ValueError("a ranker that reads retrieval is exported with the retrieval model it trained with, "
                             "and only such a ranker")
        self.query_model = None if retrieval is None else retrieval.model
        self.query_lookup = None if retrieval is None else retrieval.vocabulary.lookup_layer()

    def readable(self, history):
        """bool [B, H]: the history positions the ranker reads (known items, the newest
        ``max_len`` of them)."""
        return self._read_positions(is_item(self.lookup(history)))[1]

    def _read_positions(self, valid):
        """(input position -> compact position int32 [B, H], read bool [B, H]) of the history
        positions holding known items (``valid``): the newest ``max_len`` of them are read."""
        before = tf.cumsum(tf.cast(valid, tf.int32), axis=1, exclusive=True)
        dropped = tf.maximum(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1, keepdims=True) - self.max_len, 0)
        position = before - dropped
        return position, valid & (position >= 0)

    def _compact(self, history, ratings=None, timestamps=None, width=None):
        """The newest ``width`` (default ``max_len``) known items of each row, left-aligned and
        right-padded: (model ids int64, raw ratings float32, raw timestamps int64), each
        [B, W] with W >= 1, and the history's model ids [B, H]."""
        ids = self.lookup(history)
        valid = is_item(ids)
        width = self.max_len if width is None else width
        ratings = tf.fill(tf.shape(history), float("nan")) if ratings is None else ratings
        timestamps = tf.zeros(tf.shape(history), tf.int64) if timestamps is None else timestamps

        def compact(x, fill):
            dense = tf.ragged.boolean_mask(x, valid)[:, -width:].to_tensor(fill)
            wide = tf.maximum(tf.shape(dense)[1], 1)  # at least one column (all padding)
            return tf.pad(dense, [[0, 0], [0, wide - tf.shape(dense)[1]]], constant_values=fill)

        return (compact(ids, tf.constant(0, tf.int64)), compact(ratings, tf.constant(0.0)),
                compact(timestamps, tf.constant(0, tf.int64))), ids

    def _network_inputs(self, events, candidates, user_ids, query_ids):
        """The network's inputs from compact events (:meth:`_compact`), candidates' model ids
        [b, C], user feature ids [b, U] and the history's retrieval ids (or None)."""
        compact_ids, ratings, timestamps = events
        compact_valid = is_item(compact_ids)
        gaps = event_gap_ids(timestamps, compact_valid, NUM_GAP_BUCKETS)
        rating_ids = event_rating_ids(ratings, self.num_ratings) if self.num_ratings \
            else tf.zeros_like(compact_ids)
        inputs = {"history": compact_ids, "history_ratings": tf.where(compact_valid, rating_ids, 0),
                  "history_gaps": tf.where(compact_valid, gaps, 0), "candidates": candidates,
                  "user_features": user_ids}
        if query_ids is not None:
            query = tf.cast(self.query_model(query_ids, training=False), tf.float32)
            inputs["retrieval_query"] = query[:, tf.newaxis] if query.shape.rank == 2 else query
        return inputs

    def _user_ids(self, rows, user):
        if user is None:
            return tf.zeros([rows, self.num_user_features], tf.int64)
        return self.user_encoder(*user)[:, :self.num_user_features]

    def _inputs(self, history, candidates, ratings=None, timestamps=None, user=None):
        """Network inputs from raw tensors, and how compact history positions map back."""
        events, ids = self._compact(history, ratings, timestamps)
        query_ids = None if self.query_model is None else self.query_lookup(history)
        inputs = self._network_inputs(events, self.lookup(candidates), self._user_ids(tf.shape(history)[0], user),
                                      query_ids)
        return inputs, self._read_positions(is_item(ids))

    def rank(self, history, candidates, ratings=None, timestamps=None, user=None):
        """(scores [B, C], rating [B, C], attention [B, C, H] over the input positions)."""
        b, c, h = (tf.cast(tf.shape(x)[i], tf.int64) for x, i in ((candidates, 0), (candidates, 1), (history, 1)))
        checks = [_check((c > 0) | (b == 0), "candidates: the candidate list is empty (C = 0)"),
                  _check(b * c * h <= MAX_POSITIONS,
                         f"history, candidates: rows x candidates x history positions is over {MAX_POSITIONS} per "
                         "request; send fewer rows, candidates or history positions"),
                  _check(b * c * tf.minimum(h, self.max_len) <= MAX_READ,
                         f"history, candidates: rows x candidates x history items read is over {MAX_READ} per "
                         "request; send fewer rows or candidates")]
        if ratings is not None:
            checks.append(_check(tf.reduce_all(tf.shape(ratings) == tf.shape(history)),
                                 "history_ratings: shape must equal the shape of history"))
            checks.append(_check(tf.reduce_all(tf.shape(timestamps) == tf.shape(history)),
                                 "history_timestamps: shape must equal the shape of history"))
        with tf.control_dependencies(checks):
            inputs, (position, keep) = self._inputs(history, candidates, ratings, timestamps, user)
        out = self.network(inputs, training=False)
        weights = tf.cast(out["attention"], tf.float32)
        last = tf.shape(weights)[2] - 1  # positions of non-items may point past the compact width
        picked = tf.gather(weights, tf.clip_by_value(position, 0, last), axis=2, batch_dims=1)
        attention = tf.where(keep[:, tf.newaxis, :], picked, 0.0)
        return tf.cast(out["scores"], tf.float32), tf.cast(out["rating"], tf.float32), attention

    def leave_one_out(self, history, candidates, attention, scores, positions: int, ratings=None, timestamps=None,
                      user=None, readable=None):
        """What removing each history item does to each candidate's ranker score: for every
        candidate, its ``positions`` read history positions of largest |target attention|
        are removed one at a time (the history then reads the next older item, as if the
        user had never had it) and the candidate is scored again, in one batch.

        The re-scored histories are built from the compact ids looked up once (the newest
        ``max_len + 1`` known items: removing one lets the next older in), so no string is
        looked up or compacted again; the time gaps are recomputed for each (removing the
        newest event moves every gap), and a ranker that reads retrieval recomputes its
        query vectors without the item.

        Args:
            attention: float32 [B, C, H], from :meth:`rank` over the same inputs.
            scores: float32 [B, C]. The candidates' ranker scores (:meth:`rank`).
            readable: bool [B, H], :meth:`readable` of ``history`` when the caller has it.

        Returns:
            (``positions`` int32 [B, C, M] input positions, ``drops`` float32 [B, C, M]: the
            score minus the score without that item, ``real`` bool [B, C, M]: whether the
            position holds a read item; M = min(positions, H)).
        """
        shape = tf.shape(attention)
        b, c, h = shape[0], shape[1], shape[2]
        m = tf.minimum(positions, h)
        readable = self.readable(history) if readable is None else readable
        wide_readable = tf.broadcast_to(readable[:, tf.newaxis, :], shape)
        size = tf.cast(b, tf.int64) * tf.cast(c, tf.int64) * tf.cast(m, tf.int64) * tf.cast(h, tf.int64)
        with tf.control_dependencies([_check(size <= MAX_POSITIONS, (
                f"history: rows x items x {positions} explained positions x history positions is over "
                f"{MAX_POSITIONS} per request; send fewer rows or history positions"))]):
            wide_readable = tf.identity(wide_readable)
        _, top = tf.math.top_k(tf.where(wide_readable, tf.abs(attention), -1.0), k=m)  # [B, C, M]
        real = tf.gather(wide_readable, top, batch_dims=2)
        rows = b * c * m

        def tile(x):  # [B, ...] -> [B * C * M, ...], each row's inputs for each (candidate, removed item)
            x = tf.convert_to_tensor(x)
            rest = tf.shape(x)[1:]
            wide = tf.broadcast_to(x[:, tf.newaxis, tf.newaxis], tf.concat([[b, c, m], rest], 0))
            return tf.reshape(wide, tf.concat([[rows], rest], 0))

        # The newest max_len + 1 known items (E), and where each input position sits in E.
        events, ids = self._compact(history, ratings, timestamps, width=self.max_len + 1)
        valid = is_item(ids)
        count = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1, keepdims=True)
        in_extended = tf.cumsum(tf.cast(valid, tf.int32), axis=1, exclusive=True) - \
            tf.maximum(count - (self.max_len + 1), 0)  # [B, H]
        removed = tf.reshape(tf.gather(in_extended, top, batch_dims=1), [rows, 1])  # [rows, 1]
        # Without E[r]: E's other items, oldest first (at most max_len: all of them are read).
        width = tf.maximum(tf.shape(events[0])[1] - 1, 1)
        slots = tf.range(width)[tf.newaxis, :]
        source = tf.minimum(slots + tf.cast(slots >= removed, tf.int32), tf.shape(events[0])[1] - 1)
        without = tuple(tf.gather(tile(x), source, batch_dims=1) for x in events)
        # A source past E's last column (a row of max_len items or fewer) is padding.
        beyond = slots + tf.cast(slots >= removed, tf.int32) >= tf.shape(events[0])[1]
        without = (tf.where(beyond, tf.constant(0, tf.int64), without[0]), without[1], without[2])
        query_ids = None
        if self.query_model is not None:
            query_ids = tf.where(tf.reshape(tf.one_hot(top, h, on_value=True, off_value=False), [rows, h]),
                                 tf.constant(0, tf.int64), tile(self.query_lookup(history)))
        candidate_ids = self.lookup(candidates)
        one = tf.reshape(tf.broadcast_to(candidate_ids[:, :, tf.newaxis], [b, c, m]), [rows, 1])
        user_ids = self._user_ids(b, user)
        inputs = self._network_inputs(without, one, tile(user_ids), query_ids)
        if self.network.target_attention.per_event_weights:
            again = self._pooled_rescoring(self._network_inputs(events, candidate_ids, user_ids, None), inputs,
                                           source, tf.reshape(real, [rows]), m)
        else:
            again = tf.cast(self.network(inputs, training=False)["scores"][:, 0], tf.float32)
        drops = scores[:, :, tf.newaxis] - tf.reshape(again, [b, c, m])
        return top, tf.where(real, drops, 0.0), real

    def _pooled_rescoring(self, extended, inputs, source, real, m):
        """The leave-one-out scores [rows] when each event's target-attention weight depends
        only on the event and the candidate (DIN without normalization): the weights of the
        newest ``max_len + 1`` events (``extended``, [B, E]) are computed once per candidate
        and each shortened history's pooled interest is gathered from them (no second pass
        of the attention over rows x history pairs), then the network's head scores it. A
        row whose events changed (removing the newest event moves the time gaps) is scored
        by the whole network, so every row equals the network's score of its history."""
        network = self.network
        events, mask = network.event_embeddings(extended)  # [B, E, d]
        _, weights = network.target_attention(events, mask, network.items(extended["candidates"]),
                                              training=False)  # [B, C, E]
        shape = tf.shape(weights)
        b, c, e = shape[0], shape[1], shape[2]
        owner = tf.repeat(tf.range(b), c * m)  # each row's batch row
        flat = owner[:, tf.newaxis] * e + source  # [rows, W] into B x E
        row_events = tf.gather(tf.reshape(events, [b * e, -1]), flat)  # [rows, W, d]
        row_weights = tf.gather(tf.repeat(tf.reshape(weights, [b * c, e]), m, axis=0), source, batch_dims=1)
        row_mask = is_item(inputs["history"])
        row_weights = tf.where(row_mask, row_weights, tf.zeros_like(row_weights))
        row_events = row_events * tf.cast(row_mask, row_events.dtype)[..., tf.newaxis]
        pooled = tf.einsum("rw,rwd->rd", tf.cast(row_weights, row_events.dtype), row_events)[:, tf.newaxis]
        scores = tf.cast(network.interaction_scores(pooled, row_events, row_mask, inputs)[:, 0], tf.float32)
        gaps = tf.gather(tf.reshape(extended["history_gaps"], [-1]), flat)
        changed = real & tf.reduce_any(row_mask & (gaps != inputs["history_gaps"]), axis=1)

        def whole_network():
            where = tf.where(changed)
            again = network({name: tf.gather_nd(x, where) for name, x in inputs.items()}, training=False)["scores"]
            return tf.tensor_scatter_nd_update(scores, where, tf.cast(again[:, 0], tf.float32))

        return tf.cond(tf.reduce_any(changed), whole_network, lambda: scores)

    @tf.function(input_signature=[HISTORY_SPEC, CANDIDATES_SPEC])
    def serving_default(self, history, candidates):
        scores, rating, _ = self.rank(history, candidates)
        return {"scores": scores, "rating": rating}

    @tf.function(input_signature=[HISTORY_SPEC, CANDIDATES_SPEC])
    def leave_one_out_drops(self, history, candidates):
        """``drops`` float32 [B, C, H]: each candidate's score drop when that history item is
        removed, for its ``explain_positions`` items of largest attention (0 elsewhere)."""
        scores, _, attention = self.rank(history, candidates)
        positions, drops, _ = self.leave_one_out(history, candidates, attention, scores, self.explain_positions)
        return {"drops": tf.reduce_sum(tf.one_hot(positions, tf.shape(history)[1]) * drops[..., tf.newaxis], axis=2)}

    @tf.function(input_signature=[HISTORY_SPEC, CANDIDATES_SPEC])
    def explain(self, history, candidates):
        return {"attention": self.rank(history, candidates)[2]}

    @tf.function(input_signature=[HISTORY_SPEC, CANDIDATES_SPEC, *FEATURE_SPECS])
    def with_features(self, history, candidates, history_ratings, history_timestamps, user_age, user_gender,
                      user_occupation, user_zip):
        scores, rating, _ = self.rank(history, candidates, history_ratings, history_timestamps,
                                      (user_age, user_gender, user_occupation, user_zip))
        return {"scores": scores, "rating": rating}

    @tf.function(input_signature=[HISTORY_SPEC, CANDIDATES_SPEC, *FEATURE_SPECS])
    def explain_with_features(self, history, candidates, history_ratings, history_timestamps, user_age,
                              user_gender, user_occupation, user_zip):
        return {"attention": self.rank(history, candidates, history_ratings, history_timestamps,
                                       (user_age, user_gender, user_occupation, user_zip))[2]}

    def signatures(self) -> dict:
        return {name: getattr(self, name).get_concrete_function()
                for name in ("serving_default", "explain", "with_features", "explain_with_features",
                             "leave_one_out_drops")}


class RecommendServingModule(tf.Module):
    """Retrieval + ranking in one graph: history -> the top ``k`` items with explanations.

    The retrieval model's brute-force top ``candidates`` items (the history excluded) are
    re-ranked by ``ranker score + retrieval_weight * retrieval score`` (the ranking model's
    blend weight, chosen on validation), and each returned item comes with the ``because``
    history items whose removal lowers its ranker score the most (leave one out, in the
    graph, over the item's ``explain_positions`` history items of largest target attention).

    Signatures ``serving_default`` (``history``) and ``with_features`` (+ the feature inputs
    of the module docstring) -> ``item_ids`` string [B, k], ``scores`` float32 [B, k] (the
    blended score), ``rating`` float32 [B, k], ``because_ids`` string [B, k, because] and
    ``because_drops`` float32 [B, k, because]: the ranker score minus the score without that
    history item, largest first (only items whose removal lowers the score); ``attention_ids`` / ``attention_weights`` [B, k, because]: the
    items of largest |target attention| and their shares (|weights| of the history sum to 1).
    ``""`` and 0 where the history has fewer items.
    """

    def __init__(self, retrieval_model, retrieval_vocabulary: ItemVocabulary, ranking: RankingServingModule,
                 k: int = 10, candidates: int = 100, because: int = 3):
        super().__init__(name="recommend")
        from tfrec_attn.export.index import build_index

        self.retrieval_model = retrieval_model
        self.retrieval_lookup = retrieval_vocabulary.lookup_layer()
        self.ranking = ranking
        self.k = int(min(k, candidates))
        self.num_candidates = int(min(candidates, len(retrieval_vocabulary)))
        self.because = int(because)
        self.index = build_index("brute_force", tf.cast(retrieval_model.item_embeddings(), tf.float32),
                                 tf.constant(list(retrieval_vocabulary.item_ids)), self.num_candidates)

    def recommend(self, history, ratings=None, timestamps=None, user=None):
        # An empty history ([B, 0]) is one padding column: no items, as for [["", ...]].
        pad = [[0, 0], [0, tf.maximum(1 - tf.shape(history)[1], 0)]]
        history = tf.pad(history, pad, constant_values="")
        if ratings is not None:
            ratings = tf.pad(ratings, pad, constant_values=float("nan"))
            timestamps = tf.pad(timestamps, pad)
        ids = self.retrieval_lookup(history)
        # A rating-aware retrieval model reads the events' ratings too (None: unknown).
        with tf.control_dependencies(check_ratings(history, ratings)):
            query = tf.cast(self.retrieval_model(ids, training=False, ratings=ratings), tf.float32)
        exclude = history_rows(ids)
        if query.shape.rank == 3:  # several interests, merged as the retrieval model merges them
            model = self.retrieval_model
            retrieval_scores, candidates, _ = self.index.query_interests(
                query, model.aggregation_weights(ids, query), exclude, k=self.num_candidates,
                aggregation=model.aggregation)
        else:
            retrieval_scores, candidates = self.index.query(query, exclude, k=self.num_candidates)
        scores, rating, attention = self.ranking.rank(history, candidates, ratings, timestamps, user)
        # A batch row whose candidates ran out (tiny catalogues) scores -inf: keep it last.
        blended = tf.where(tf.math.is_finite(retrieval_scores),
                           scores + self.ranking.retrieval_weight * retrieval_scores, float("-inf"))
        top_scores, top = tf.math.top_k(blended, k=self.k)
        item_ids = tf.gather(candidates, top, batch_dims=1)
        attention = tf.gather(attention, top, batch_dims=1)  # [B, k, H]
        # `because`: the items whose removal lowers the item's ranker score the most (leave one
        # out over its `explain_positions` items of largest attention), with the drop each causes.
        readable = self.ranking.readable(history)
        positions, drops, real = self.ranking.leave_one_out(
            history, item_ids, attention, tf.gather(scores, top, batch_dims=1), self.ranking.explain_positions,
            ratings, timestamps, user, readable)
        because_ids, because_drops = self._strongest(history, positions,
                                                     tf.where(real & (drops > 0), drops, float("-inf")))
        # The attention's own account, apart: the items of largest |attention| (shares of the total).
        readable = tf.broadcast_to(readable[:, tf.newaxis, :], tf.shape(attention))
        share = tf.math.divide_no_nan(attention, tf.reduce_sum(tf.abs(attention), axis=2, keepdims=True))
        width = tf.shape(attention)[2]
        attention_ids, attention_weights = self._strongest(
            history, tf.broadcast_to(tf.range(width)[tf.newaxis, tf.newaxis, :], tf.shape(attention)),
            tf.where(readable, share, float("-inf")), by=tf.abs(share))
        return {"item_ids": item_ids, "scores": top_scores,
                "rating": tf.gather(rating, top, batch_dims=1),
                "because_ids": because_ids, "because_drops": because_drops,
                "attention_ids": attention_ids, "attention_weights": attention_weights}

    def _strongest(self, history, positions, values, by=None):
        """The ``because`` entries of largest ``by`` (default ``values``; -inf = none) per item:
        (history ids string [B, k, because], values float32 [B, k, because]; ``""`` and 0 where
        there are fewer)."""
        by = values if by is None else tf.where(tf.math.is_finite(values), by, float("-inf"))
        width = tf.shape(values)[2]
        pad = tf.maximum(self.because - width, 0)
        by = tf.pad(by, [[0, 0], [0, 0], [0, pad]], constant_values=float("-inf"))
        values = tf.pad(values, [[0, 0], [0, 0], [0, pad]], constant_values=float("-inf"))
        positions = tf.pad(positions, [[0, 0], [0, 0], [0, pad]])
        strength, order = tf.math.top_k(by, k=self.because)
        found = tf.math.is_finite(strength)
        picked = tf.gather(positions, order, batch_dims=2)
        rows = tf.broadcast_to(history[:, tf.newaxis, :], tf.concat([tf.shape(picked)[:2], tf.shape(history)[1:]], 0))
        ids = tf.gather(rows, tf.minimum(picked, tf.shape(history)[1] - 1), batch_dims=2)
        return tf.where(found, ids, ""), tf.where(found, tf.gather(values, order, batch_dims=2), 0.0)

    @tf.function(input_signature=[HISTORY_SPEC])
    def serving_default(self, history):
        return self.recommend(history)

    @tf.function(input_signature=[HISTORY_SPEC, *FEATURE_SPECS])
    def with_features(self, history, history_ratings, history_timestamps, user_age, user_gender, user_occupation,
                      user_zip):
        return self.recommend(history, history_ratings, history_timestamps,
                              (user_age, user_gender, user_occupation, user_zip))

    def signatures(self) -> dict:
        return {"serving_default": self.serving_default.get_concrete_function(),
                "with_features": self.with_features.get_concrete_function()}


def _warmup(vocabulary: ItemVocabulary, with_candidates: bool) -> list:
    """Representative requests (several history lengths and batch sizes) for both forms."""
    import numpy as np

    ids = np.asarray(vocabulary.item_ids, dtype=object)
    requests = []
    for batch in (1, 8):
        for length in (1, 10, 50):
            inputs = {"history": np.resize(ids, batch * length).reshape(batch, length).astype(object)}
            if with_candidates:
                inputs["candidates"] = np.resize(ids[::-1], batch * 100).reshape(batch, 100).astype(object)
            requests.append(("serving_default", dict(inputs)))
            inputs.update(history_ratings=np.full((batch, length), 4.0, np.float32),
                          history_timestamps=np.full((batch, length), 880000000, np.int64),
                          user_age=np.full(batch, 30, np.int64), user_gender=np.array(["M"] * batch, object),
                          user_occupation=np.array(["other"] * batch, object),
                          user_zip=np.array(["10001"] * batch, object))
            requests.append(("with_features", inputs))
    return requests


def export_ranking(model, vocabulary: ItemVocabulary, user_encoder, base_path: str, *, model_name: str = "ranking",
                   max_len: int = 50, num_ratings: int = 5, version: int | None = None,
                   explain_positions: int = 10, retrieval=None) -> str:
    """Exports a trained ranking model (TF Serving layout); returns the version directory.
    ``retrieval``: the frozen retrieval model (a Retriever) of a ranker that reads one."""
    from tfrec_attn.export.saved_model import publish_saved_model

    module = RankingServingModule(model, vocabulary, user_encoder, max_len, num_ratings, explain_positions,
                                  retrieval)
    return publish_saved_model(module, module.signatures(), base_path, model_name, version,
                               warmup=_warmup(vocabulary, True))


def export_recommend(retrieval_model, retrieval_vocabulary: ItemVocabulary, ranking_model,
                     ranking_vocabulary: ItemVocabulary, user_encoder, base_path: str, *,
                     model_name: str = "recommend", k: int = 10, candidates: int = 100, because: int = 3,
                     max_len: int = 50, num_ratings: int = 5, version: int | None = None,
                     explain_positions: int = 10, ranker_retrieval=None) -> str:
    """Exports retrieval + ranking as one ``recommend`` SavedModel; returns the version directory.
    ``ranker_retrieval``: the frozen retrieval model (a Retriever) the ranker reads, if any
    (its selection checkpoint: not necessarily the model that retrieves)."""
    from tfrec_attn.export.saved_model import publish_saved_model

    ranking = RankingServingModule(ranking_model, ranking_vocabulary, user_encoder, max_len, num_ratings,
                                   explain_positions, ranker_retrieval)
    module = RecommendServingModule(retrieval_model, retrieval_vocabulary, ranking, k, candidates, because)
    return publish_saved_model(module, module.signatures(), base_path, model_name, version,
                               warmup=_warmup(retrieval_vocabulary, False))
