"""Content-only baseline (no training): score = cosine similarity between a candidate's
text embedding and the mean text embedding of the user's history."""

from __future__ import annotations

import numpy as np


class ContentBaseline:
    """Args:
        item_features: float [num_items, d]. Text-encoder features of the split's
            catalogue, in catalogue order (e.g. MiniLM, :func:`catalogue_text_features`).
    """

    def __init__(self, item_features):
        features = np.asarray(item_features, np.float32)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        self.features = features / np.maximum(norms, 1e-12)

    def fit(self, split=None) -> ContentBaseline:
        return self  # nothing to learn

    def score_fn(self, split=None):
        def score(users, histories):
            profiles = np.stack([self.features[np.asarray(h, np.int64)].mean(axis=0) if len(h)
                                 else np.zeros(self.features.shape[1], np.float32) for h in histories])
            profiles /= np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-12)
            return profiles @ self.features.T

        return score
