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


def rated_successor_sequences(num_items: int = 60, num_users: int = 300, min_len: int = 5, max_len: int = 20,
                              jump: int = 3, seed: int = 0) -> Dataset:
    """Where the next item depends on the rating of the last one: every event is rated 1 or 5
    at random; after a 5 the user moves from item ``i`` to ``i + 1``, after a 1 to
    ``i + jump`` (mod N). A model that reads the items alone can only split its bet
    between the two; one that reads the ratings too ranks the next item first. With
    ``(max_len - 1) * jump < num_items`` no user meets an item twice."""
    rng = np.random.default_rng(seed)
    users, items, times, ratings = [], [], [], []
    for user in range(num_users):
        item = int(rng.integers(num_items))
        for step in range(int(rng.integers(min_len, max_len + 1))):
            rating = 5.0 if rng.random() < 0.5 else 1.0
            users.append(f"u{user}")
            items.append(f"i{item}")
            times.append(1_000_000 + step * 60)
            ratings.append(rating)
            item = (item + (1 if rating == 5.0 else jump)) % num_items
    catalogue = {f"i{i}": Item(f"i{i}", f"Item {i}", ("Synthetic",)) for i in range(num_items)}
    interactions = Interactions.from_rows(users, items, times, np.asarray(ratings))
    return Dataset("rated_successor", interactions, catalogue, source="synthetic")


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


TOPIC_WORDS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white")
NAME_WORDS = ("cat", "dog", "horse", "bird", "fish", "lion", "tiger", "bear", "wolf", "fox",
              "mouse", "snake")


def topic_sequences(num_topics: int = 6, items_per_topic: int = 10, num_users: int = 400, min_len: int = 5,
                    max_len: int = 12, seed: int = 0) -> Dataset:
    """Items in topics whose *text* carries the successor pattern (cold-start tests).

    Item ``t:j`` has the text ``"<topic word t> <name word j>"``; a user's next item is a
    random item of the next topic (t + 1 mod num_topics). A model that reads the text can
    recommend an item it has never seen (its topic word says where it belongs); an id
    model cannot.
    """
    if num_topics > len(TOPIC_WORDS) or items_per_topic > len(NAME_WORDS):
        raise ValueError(f"at most {len(TOPIC_WORDS)} topics of {len(NAME_WORDS)} items")
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(num_users):
        topic = int(rng.integers(num_topics))
        for step in range(int(rng.integers(min_len, max_len + 1))):
            users.append(f"u{user}")
            items.append(f"t{topic}i{int(rng.integers(items_per_topic))}")
            times.append(1_000_000 + step * 60)
            topic = (topic + 1) % num_topics
    catalogue = {f"t{t}i{j}": Item(f"t{t}i{j}", f"{TOPIC_WORDS[t]} {NAME_WORDS[j]}")
                 for t in range(num_topics) for j in range(items_per_topic)}
    interactions = Interactions.from_rows(users, items, times, np.full(len(users), np.nan))
    return Dataset("topics", interactions, catalogue, source="synthetic")


CLUSTER_GENRES = ("Western", "Animation", "Horror", "Musical", "Documentary", "Film-Noir")


def mixed_interest_sequences(num_clusters: int = 4, items_per_cluster: int = 10, num_users: int = 400,
                             min_len: int = 8, max_len: int = 16, seed: int = 0) -> Dataset:
    """Users with two tastes (multi-interest tests).

    Items fall in ``num_clusters`` disjoint clusters; item ``c:j`` has the genre
    ``CLUSTER_GENRES[c]`` and the title ``"<genre> <name word j>"``. Each user likes two
    distinct clusters and every next item is a random item of one of the two, chosen at
    random. One query vector must sit between the clusters; two can sit one in each.
    """
    if num_clusters > len(CLUSTER_GENRES) or items_per_cluster > len(NAME_WORDS):
        raise ValueError(f"at most {len(CLUSTER_GENRES)} clusters of {len(NAME_WORDS)} items")
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for user in range(num_users):
        tastes = rng.choice(num_clusters, size=2, replace=False)
        for step in range(int(rng.integers(min_len, max_len + 1))):
            cluster = int(tastes[rng.integers(2)])
            users.append(f"u{user}")
            items.append(f"c{cluster}i{int(rng.integers(items_per_cluster))}")
            times.append(1_000_000 + step * 60)
    catalogue = {f"c{c}i{j}": Item(f"c{c}i{j}", f"{CLUSTER_GENRES[c]} {NAME_WORDS[j]}", (CLUSTER_GENRES[c],))
                 for c in range(num_clusters) for j in range(items_per_cluster)}
    interactions = Interactions.from_rows(users, items, times, np.full(len(users), np.nan))
    return Dataset("mixed-interests", interactions, catalogue, source="synthetic")
