"""The interest profile, fitted after retrieval (the retrieval model frozen): every window
of the training sequences gives a history's interests and the genre distribution of its next
``horizon`` items; :class:`~tfrec_attn.models.interest_profile.InterestProfileHead` learns the
map. The baseline it must beat is the history's own genre distribution, smoothed towards the
catalogue's with the weight that fits the same windows best.

    >>> profile = fit_profile(retrieval_model, vocabulary, split, dataset)
    >>> profile.predict(histories)           # [n, G] genre distributions of the next 10 items
    >>> profile.history_baseline(histories)  # the same from the histories' own genres
"""

from __future__ import annotations

import dataclasses

import numpy as np

HORIZON = 10
SMOOTHING = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # prior weights tried for the history baseline (in items)


def genre_table(dataset, split) -> tuple[list, np.ndarray]:
    """(genre names, [num_items, G]): each catalogue item's genres, its mass 1 spread evenly
    (a row of zeros for an item without genres)."""
    names = sorted({g for item in dataset.items.values() for g in item.genres})
    index = {g: i for i, g in enumerate(names)}
    table = np.zeros((split.num_items, len(names)), np.float32)
    for row, item_id in enumerate(split.item_vocab):
        item = dataset.items.get(item_id)
        if item is not None and item.genres:
            table[row, [index[g] for g in item.genres]] = 1.0 / len(item.genres)
    return names, table


def distribution(table, items) -> np.ndarray:
    """The normalised genre mass of catalogue ``items`` ([G]; zeros when none has a genre)."""
    mass = table[np.asarray(items, np.int64)].sum(axis=0)
    total = mass.sum()
    return mass / total if total > 0 else mass


def windows(sequences, horizon: int = HORIZON, stride: int = 5, min_history: int = 3):
    """(histories, futures): every ``stride``-th cut of each sequence with at least
    ``min_history`` items before it and ``horizon`` after."""
    histories, futures = [], []
    for seq in sequences:
        for t in range(min_history, len(seq) - horizon + 1, stride):
            histories.append(seq[:t])
            futures.append(seq[t:t + horizon])
    return histories, futures


def future_split(split, fraction: float = 0.2, horizon: int = HORIZON, seed: int = 0, min_interactions: int = 3):
    """The protocol's split: a seeded ``fraction`` of the evaluated users (those with more than
    ``horizon + min_interactions`` events) lose their last ``horizon`` events, which no model
    sees. Returns (the reduced split, those users, their removed events)."""
    from tfrec_attn.data.splits import LeaveOneOutSplit

    long_enough = [u for u in split.evaluated if len(split.sequences[u]) >= horizon + min_interactions + 2]
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(long_enough, size=max(1, round(fraction * len(long_enough))), replace=False))
    cut = set(held.tolist())
    futures, sequences, timestamps, ratings = [], [], [], []
    for u, seq in enumerate(split.sequences):
        end = len(seq) - horizon if u in cut else len(seq)
        if u in cut:
            futures.append(seq[end:])
        sequences.append(seq[:end])
        timestamps.append(split.timestamps[u][:end])
        ratings.append(split.ratings[u][:end])
    reduced = LeaveOneOutSplit(item_vocab=split.item_vocab, user_ids=split.user_ids, sequences=sequences,
                               timestamps=timestamps, ratings=ratings, evaluated=split.evaluated)
    return reduced, held, futures


def user_interests(model, vocabulary, split, histories, rows: int = 256) -> np.ndarray:
    """The retrieval model's queries of catalogue-index ``histories``: [n, K, d] (K = 1 for a
    one-vector model)."""
    import tensorflow as tf

    from tfrec_attn.evaluation.retrieval import model_batch

    to_model = vocabulary.model_indices(split.item_vocab)
    out = []
    for start in range(0, len(histories), rows):
        queries = model(tf.constant(model_batch(histories[start:start + rows], to_model, model.max_len)))
        queries = np.asarray(queries, np.float32)
        out.append(queries[:, None] if queries.ndim == 2 else queries)
    return np.concatenate(out)


def profile_metrics(predicted: np.ndarray, target: np.ndarray) -> dict:
    """Mean cross-entropy of the predicted genre distributions against the true ones, and how
    often the predicted top genre is the true top genre (rows with a true distribution only)."""
    keep = target.sum(axis=1) > 0
    predicted, target = predicted[keep], target[keep]
    cross_entropy = -(target * np.log(np.maximum(predicted, 1e-8))).sum(axis=1)
    return {"cross_entropy": float(cross_entropy.mean()),
            "top_genre_accuracy": float(np.mean(predicted.argmax(axis=1) == target.argmax(axis=1))),
            "users": int(keep.sum())}


@dataclasses.dataclass
class InterestProfile:
    """A fitted profile head with what it reads: the frozen retrieval model, the genre table,
    the prior and the smoothing weight."""

    head: object
    model: object
    vocabulary: object
    split: object
    genres: list
    table: np.ndarray
    prior: np.ndarray
    smoothing: float

    def history_baseline(self, histories) -> np.ndarray:
        """Each history's own genre distribution, smoothed towards the catalogue's prior."""
        from tfrec_attn.models.interest_profile import smoothed_genres

        counts = np.stack([self.table[np.asarray(h, np.int64)].sum(axis=0) for h in histories])
        return smoothed_genres(counts, self.prior, self.smoothing).numpy()

    def model_table(self) -> np.ndarray:
        """The genre table in the model's index space ([num_indices, G]; padding, OOV and
        items the model does not know: zero rows)."""
        to_model = self.vocabulary.model_indices(self.split.item_vocab)
        known = self.vocabulary.is_item(to_model)
        table = np.zeros((self.vocabulary.num_indices, self.table.shape[1]), np.float32)
        table[to_model[known]] = self.table[known]
        return table

    def save(self, directory: str) -> str:
        """Writes what serving needs (RUN/interest_profile/): the head's config and weights, the
        genre names, the model-index genre table, the prior and the smoothing weight."""
        import json
        import os

        os.makedirs(directory, exist_ok=True)
        self.head.save_weights(os.path.join(directory, "head"))
        np.save(os.path.join(directory, "genre_table.npy"), self.model_table())
        with open(os.path.join(directory, "profile.json"), "w", encoding="utf-8") as handle:
            json.dump({"head": self.head.get_config(), "genres": list(self.genres),
                       "prior": [float(p) for p in self.prior], "smoothing": float(self.smoothing)}, handle, indent=2)
        return directory

    def served(self):
        """What the ``profile`` signature reads of this fitted profile (a ServedProfile)."""
        from tfrec_attn.models.interest_profile import ServedProfile

        return ServedProfile(self.head, list(self.genres), self.model_table(), np.asarray(self.prior, np.float32),
                             float(self.smoothing))

    def predict(self, histories) -> np.ndarray:
        interests = user_interests(self.model, self.vocabulary, self.split, histories)
        return self.head.predict({"interests": interests, "history_genres": self.history_baseline(histories)},
                                 batch_size=512, verbose=0)


def fit_profile(model, vocabulary, split, dataset, *, users=None, horizon: int = HORIZON, epochs: int = 20,
                seed: int = 0) -> InterestProfile:
    """Fits the head on the windows of ``users``' training sequences (default: all), 10% of the
    windows held out for early stopping; the smoothing weight of the baseline is the one of
    :data:`SMOOTHING` with the lowest cross-entropy on the same windows."""
    import tensorflow as tf

    from tfrec_attn.models.interest_profile import InterestProfileHead

    genres, table = genre_table(dataset, split)
    sequences = split.train_sequences()
    if users is not None:
        sequences = [sequences[u] for u in users]
    histories, futures = windows(sequences, horizon)
    targets = np.stack([distribution(table, f) for f in futures])
    keep = targets.sum(axis=1) > 0
    histories = [h for h, k in zip(histories, keep) if k]
    targets = targets[keep]
    if not len(targets):
        raise ValueError(f"no training window of {horizon} next items has a genre (category): the catalogue's "
                         "items carry none")
    prior = np.concatenate(sequences)
    prior = distribution(table, prior)
    profile = InterestProfile(None, model, vocabulary, split, genres, table, prior, SMOOTHING[0])
    best = None
    for weight in SMOOTHING:
        profile.smoothing = weight
        loss = profile_metrics(profile.history_baseline(histories), targets)["cross_entropy"]
        if best is None or loss < best[0]:
            best = (loss, weight)
    profile.smoothing = best[1]
    tf.keras.utils.set_random_seed(seed)
    interests = user_interests(model, vocabulary, split, histories)
    head = InterestProfileHead(interests.shape[-1], len(genres), name="interest_profile")
    head.compile(tf.keras.optimizers.Adam(1e-3), loss=tf.keras.losses.CategoricalCrossentropy())
    order = np.random.default_rng(seed).permutation(len(targets))
    valid, train = order[: len(order) // 10], order[len(order) // 10:]
    inputs = {"interests": interests, "history_genres": profile.history_baseline(histories)}
    head.fit({k: v[train] for k, v in inputs.items()}, targets[train], batch_size=256, epochs=epochs, verbose=0,
             validation_data=({k: v[valid] for k, v in inputs.items()}, targets[valid]),
             callbacks=[tf.keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)])
    profile.head = head
    return profile
