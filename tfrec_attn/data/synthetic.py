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
