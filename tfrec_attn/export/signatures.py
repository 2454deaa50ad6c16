"""Serving signatures on raw features (string ids in, string ids out)."""

from __future__ import annotations

import functools

import tensorflow as tf

from tfrec_attn.features.vocab import ItemVocabulary, history_rows, is_item, table_rows

HISTORY_SPEC = tf.TensorSpec([None, None], tf.string, name="history")
CANDIDATES_SPEC = tf.TensorSpec([None, None], tf.string, name="candidates")
ITEM_IDS_SPEC = tf.TensorSpec([None], tf.string, name="item_ids")
ITEM_TEXTS_SPEC = tf.TensorSpec([None], tf.string, name="item_texts")
HISTORY_RATINGS_SPEC = tf.TensorSpec([None, None], tf.float32, name="history_ratings")


def check_input(condition, message):
    """An in-graph check whose failure is an InvalidArgumentError naming the input (the
    server answers INVALID_ARGUMENT and keeps serving)."""
    return tf.debugging.Assert(condition, [message])


def check_ratings(history, ratings):
    """The check that ``history_ratings`` has the shape of ``history`` (a list: none
    without ratings)."""
    if ratings is None:
        return []
    return [check_input(tf.reduce_all(tf.shape(ratings) == tf.shape(history)),
                        "history_ratings: shape must equal the shape of history")]


class RetrievalServingModule(tf.Module):
    """What a retrieval export serves.

    Signature ``serving_default``:
        inputs:  ``history``: tf.string [batch, None] raw item ids, oldest first,
                 right-padded with ``""`` (ignored). Unknown ids are OOV: ignored, never an error.
        outputs: ``item_ids``: tf.string [batch, K] and ``scores``: tf.float32 [batch, K],
                 best first, never an item of ``history``.

    Signature ``rank``: ``history`` + ``candidates`` tf.string [batch, C] -> ``scores``
        float32 [batch, C] (dot products; -inf for ids the model does not know).

    Signature ``explain``: ``history`` + ``candidates`` ->
        ``attention`` float32 [batch, H]: the user tower's last-position attention over
        each history position (0 for padding/unknown/truncated items), and
        ``contributions`` float32 [batch, C, H]: attention x similarity of each history
        item to each candidate, normalised so |contributions| sums to 1 per candidate.

    Signature ``user_embedding``: ``history`` -> ``embedding`` float32 [batch, d] (d + 1 with
    ``model.item_bias``: a last coordinate of 1 that meets each candidate's bias), for
    serving stacks that bring their own nearest-neighbour index; [batch, K, d] with
    ``model.user_tower.interests`` = K > 1 (an item's score is the max over the K).

    With ``model.user_tower.interests`` = K > 1, ``serving_default`` also returns
    ``interest`` int32 [batch, K']: the interest each item comes from (the one that scores it
    highest), and the signature ``interests``: ``history`` -> ``vectors`` float32 [batch, K, d],
    ``weights`` [batch, K] (the share of the history's items nearest each interest),
    ``attention`` [batch, K, H] (each interest's attention over the history positions),
    ``labels`` tf.string [batch, K] ("Western, Crime · outlaw, sheriff"), ``genres`` [batch, K, 2],
    ``words`` [batch, K, 3] and ``top_items`` [batch, K, 3] (its most attended history items),
    from ``item_terms`` ((genres, words) :class:`~tfrec_attn.features.item_terms.ItemTerms`;
    empty labels without them).

    With an interest profile (``profile``, :class:`~tfrec_attn.models.interest_profile.ServedProfile`;
    ``model.user_tower.profile``), the signature ``profile``: ``history`` -> ``genres`` float32
    [batch, G], the predicted genre (category) distribution of the user's next 10 items;
    ``history_genres`` [batch, G], the history's own (smoothed) distribution it starts from;
    ``genre_names`` tf.string [batch, G] (the order of both); ``top_genres`` tf.string
    [batch, 3] and ``top_shares`` [batch, 3], the predicted top three.

    With a rating-aware history (``model.user_tower.num_ratings`` > 0), ``serving_default``,
    ``rank``, ``explain`` and ``user_embedding`` also take ``history_ratings`` float32
    [batch, None], the rating of each history event (the shape of ``history``; 0 or NaN =
    unknown); ``interests`` and ``profile`` read the history's items alone.

    Signature ``embed_items``: ``item_ids`` tf.string [n] + ``item_texts`` tf.string [n] ->
    ``embeddings`` float32 [n, d] (d + 1 with ``model.item_bias``): candidate vectors in
    the space ``user_embedding`` scores against. With a text or hybrid item tower the
    text is tokenized and encoded inside the graph, so an id the model has never seen
    gets its vector from its text alone (cold start; ``tfrec-attn index add-items``);
    an id tower ignores the text (unknown ids get the OOV vector).

    Args:
        model: SequentialRetrievalModel (trained).
        vocabulary: ItemVocabulary. Embedded in the graph (no sidecar files).
        k: int. Results per query.
        index: str. ``brute_force`` (stock TF ops only) or ``scann``.
        text_encoder: TextEncoder or None. The frozen encoder of a text/hybrid item tower
            (default: rebuilt from the tower's config).
    """

    def __init__(self, model, vocabulary: ItemVocabulary, k: int = 100, index: str = "brute_force",
                 text_encoder=None, item_terms=None, profile=None, **index_options):
        super().__init__(name="retrieval")
        from tfrec_attn.export.index import build_index

        self.model = model
        self._encode_texts = None
        if model.item_tower.reads_text:
            encoder = text_encoder or model.item_tower.text_encoder()
            # Track the encoder's weights and tokenizer (vocab.txt asset) but not the Keras
            # model: saving a Keras BERT traces every layer's call (a minute on 2 cores).
            self.text_encoder_weights = list(encoder.weights)
            self.tokenizer = encoder.tokenization.tokenizer
            self._encode_texts = functools.partial(encoder, training=False)
        self.k = int(k)
        self.index_kind = index
        self.lookup = vocabulary.lookup_layer()
        # The ids the index holds (``tfrec-attn index add-items`` checks new ids against it).
        self.catalogue_ids = tf.Variable(list(vocabulary.item_ids), trainable=False, dtype=tf.string,
                                         name="catalogue_ids")
        # id | text | hybrid: whether embed_items can place an unseen item (add-items checks it).
        self.item_tower_type = tf.Variable(model.item_tower.kind, trainable=False,
                                           dtype=tf.string, name="item_tower_type")
        self.num_interests = getattr(model, "num_interests", 1)
        if self.num_interests > 1:
            from tfrec_attn.export.interests import InterestLabels
            from tfrec_attn.features.item_terms import ItemTerms

            empty = ItemTerms.empty(vocabulary.num_indices)
            genres, words = item_terms or (empty, empty)
            self.interest_labels = InterestLabels(genres, words, list(vocabulary.item_ids))
            self.interests = tf.function(self._interests, input_signature=[HISTORY_SPEC])
        self.profile_head = None
        if profile is not None:
            self.profile_head = profile.head
            self.profile_table = tf.constant(profile.table, tf.float32)
            self.profile_prior = tf.constant(profile.prior, tf.float32)
            self.profile_smoothing = float(profile.smoothing)
            self.genre_names = tf.constant(list(profile.genres))
            self.profile = tf.function(self._profile, input_signature=[HISTORY_SPEC])
        candidates = tf.cast(model.item_embeddings(), tf.float32)
        self.index = build_index(index, candidates, tf.constant(list(vocabulary.item_ids)), self.k,
                                 **index_options)
        # The history signatures; a rating-aware model's also take the events' ratings.
        self.reads_ratings = getattr(model, "num_ratings", 0) > 0
        ratings = [HISTORY_RATINGS_SPEC] if self.reads_ratings else []
        self.serving_default = tf.function(self._serving_default, input_signature=[HISTORY_SPEC, *ratings])
        self.user_embedding = tf.function(self._user_embedding, input_signature=[HISTORY_SPEC, *ratings])
        self.rank = tf.function(self._rank, input_signature=[HISTORY_SPEC, CANDIDATES_SPEC, *ratings])
        self.explain = tf.function(self._explain, input_signature=[HISTORY_SPEC, CANDIDATES_SPEC, *ratings])

    def _user(self, history, ratings=None):
        ids = self.lookup(history)
        with tf.control_dependencies(check_ratings(history, ratings)):
            return ids, tf.cast(self.model(ids, training=False, ratings=ratings), tf.float32)

    def _serving_default(self, history, history_ratings=None):
        ids, user = self._user(history, history_ratings)
        if self.index_kind == "brute_force":
            exclude = history_rows(ids)
        else:
            exclude = history
        if self.num_interests == 1:
            scores, item_ids = self.index.query(user, exclude, k=self.k)
            return {"item_ids": item_ids, "scores": scores}
        # Several interests, merged as the model's evaluation merges them; with each item the
        # interest its score comes from.
        scores, item_ids, interest = self.index.query_interests(
            user, self.model.aggregation_weights(ids, user), exclude, k=self.k, aggregation=self.model.aggregation)
        return {"item_ids": item_ids, "scores": scores, "interest": interest}

    def _interests(self, history):  # the `interests` signature (several interests only)
        ids = self.lookup(history)
        queries, attention, compact = self.model.interests(ids)
        queries = tf.cast(queries, tf.float32)
        attention = tf.cast(attention, tf.float32)
        return {"vectors": queries, "weights": self.model.interest_weights(compact, queries),
                "attention": self.model.to_input_positions(ids, attention),
                **self.interest_labels(compact, attention)}

    def _profile(self, history):  # the `profile` signature (with an interest profile only)
        from tfrec_attn.models.interest_profile import smoothed_genres

        ids, queries = self._user(history)
        interests = queries[:, tf.newaxis] if self.num_interests == 1 else queries  # [b, K, d]
        interests = tf.ensure_shape(interests, [None, None, self.profile_head.embedding_dim])
        baseline = smoothed_genres(tf.reduce_sum(tf.gather(self.profile_table, ids), axis=1), self.profile_prior,
                                   self.profile_smoothing)
        predicted = tf.cast(self.profile_head({"interests": interests, "history_genres": baseline}, training=False),
                            tf.float32)
        shares, top = tf.math.top_k(predicted, k=min(3, int(self.genre_names.shape[0])))
        rows = tf.shape(history)[0]
        return {"genres": predicted, "history_genres": baseline,
                "genre_names": tf.broadcast_to(self.genre_names[tf.newaxis], [rows, tf.shape(self.genre_names)[0]]),
                "top_genres": tf.gather(self.genre_names, top), "top_shares": shares}

    def _user_embedding(self, history, history_ratings=None):
        return {"embedding": self._user(history, history_ratings)[1]}

    def _candidates(self, candidates):
        ids = self.lookup(candidates)
        known = is_item(ids)
        return known, tf.cast(self.model.candidate_vectors(ids), tf.float32)

    def _rank(self, history, candidates, history_ratings=None):
        ids, user = self._user(history, history_ratings)
        known, items = self._candidates(candidates)
        if user.shape.rank == 2:
            scores = tf.einsum("bd,bcd->bc", user, items)
        elif self.model.aggregation == "max":
            scores = tf.reduce_max(tf.einsum("bkd,bcd->bkc", user, items), axis=1)  # interests: the max over K
        else:  # the merged score depends on each interest's ranking of the whole catalogue
            merged, _ = self.model.merge_scores(
                ids, user, tf.einsum("bkd,nd->bkn", user, tf.cast(self.model.item_embeddings(), tf.float32)))
            rows = table_rows(self.lookup(candidates))
            scores = tf.gather(merged, tf.maximum(rows, 0), batch_dims=1)
        return {"scores": tf.where(known, scores, float("-inf"))}

    def _explain(self, history, candidates, history_ratings=None):
        ids = self.lookup(history)
        with tf.control_dependencies(check_ratings(history, history_ratings)):
            attention = tf.cast(self.model.explain_history(ids, history_ratings), tf.float32)
        history_items = tf.cast(self.model.item_tower(ids), tf.float32)
        known = is_item(self.lookup(candidates))
        items = tf.cast(self.model.item_tower(self.lookup(candidates)), tf.float32)
        similarity = tf.einsum("bcd,bhd->bch", items, history_items)
        raw = similarity * attention[:, tf.newaxis, :]
        total = tf.reduce_sum(tf.abs(raw), axis=2, keepdims=True)
        contributions = tf.math.divide_no_nan(raw, total) * tf.cast(known, tf.float32)[..., tf.newaxis]
        return {"attention": attention, "contributions": contributions}

    @tf.function(input_signature=[ITEM_IDS_SPEC, ITEM_TEXTS_SPEC])
    def embed_items(self, item_ids, item_texts):
        ids = self.lookup(item_ids)
        if self._encode_texts is None:
            vectors = self.model.candidate_vectors(ids)
        else:
            vectors = self.model.text_item_vectors(ids, self._encode_texts(item_texts))
        return {"embeddings": tf.cast(vectors, tf.float32)}

    def signatures(self) -> dict:
        signatures = {
            "embed_items": self.embed_items.get_concrete_function(),
            "serving_default": self.serving_default.get_concrete_function(),
            "rank": self.rank.get_concrete_function(),
            "explain": self.explain.get_concrete_function(),
            "user_embedding": self.user_embedding.get_concrete_function(),
        }
        if self.num_interests > 1:
            signatures["interests"] = self.interests.get_concrete_function()
        if self.profile_head is not None:
            signatures["profile"] = self.profile.get_concrete_function()
        return signatures
