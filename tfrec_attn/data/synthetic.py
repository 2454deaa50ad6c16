"""Synthetic interaction data with a planted sequential pattern (tests, smoke runs)."""

from __future__ import annotations

import numpy as np

from tfrec_attn.data.dataset import Dataset, Interactions, Item


def planted_sequences(num_items: int = 60, num_users: int = 300, min_len: int = 5, max_len: int = 20,
                      seed: int = 0) -> Dataset:
    """Each user walks the catalogue: item ``i`` is always followed by item ``i + 1`` (mod N).

    A sequence model that learns the rule ranks the next item first; a popularity model
    cannot (every item is about equally popular).
    """
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(num_users):
        start = int(rng.integers(num_items))
        length = int(rng.integers(min_len, max_len + 1))
        for step in range(length):
            users.append(f"u{user}")
            items.append(f"i{(start + step) % num_items}")
            times.append(1_000_000 + step * 60)
    catalogue = {f"i{i}": Item(f"i{i}", f"Item {i}", ("Synthetic",)) for i in range(num_items)}
    interactions = Interactions.from_rows(users, items, times, np.full(len(users), np.nan))
    return Dataset("planted", interactions, catalogue, source="synthetic")


def popularity_sequences(num_items: int, num_users: int, mean_len: int = 50, zipf: float = 1.0,
                         follow: float = 0.5, seed: int = 0) -> Dataset:
    """A large catalogue with a long tail, for timing at scale.

    Items are drawn with probability ~ 1 / rank**zipf (rank = a random permutation, so ids
    carry no order); with probability ``follow`` the next item is instead the successor
    of the previous one (a learnable pattern). Lengths are geometric with mean
    ``mean_len`` (at least 3, so every user has validation and test targets).
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, num_items + 1) ** zipf
    cdf = np.cumsum(weights / weights.sum())
    order = rng.permutation(num_items)
    lengths = np.maximum(3, rng.geometric(1.0 / mean_len, size=num_users))
    total = int(lengths.sum())
    popular = order[np.minimum(np.searchsorted(cdf, rng.random(total)), num_items - 1)]
    follows = rng.random(total) < follow
    items = np.empty(total, dtype=np.int64)
    users = np.repeat(np.arange(num_users), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    first = np.zeros(total, dtype=bool)
    first[starts] = True
    for i in range(total):  # sequential by construction (each item may follow the last)
        items[i] = (items[i - 1] + 1) % num_items if follows[i] and not first[i] else popular[i]
    steps = np.arange(total) - np.repeat(starts, lengths)
    user_ids = np.char.add("u", users.astype(str)).astype(object)
    item_ids = np.char.add("i", items.astype(str)).astype(object)
    catalogue = {f"i{i}": Item(f"i{i}", f"Item {i}", ("Synthetic",)) for i in range(num_items)}
    interactions = Interactions.from_rows(list(user_ids), list(item_ids), 1_000_000 + steps * 60,
                                          np.full(total, np.nan))
    return Dataset("popularity", interactions, catalogue, source="synthetic")
