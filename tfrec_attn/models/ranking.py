"""Attention ranking (DIN / BST target attention) with interaction and rating heads.

The network is a functional Keras model (:class:`~tfrec_attn.layers.RankingNetwork`);
this ``tfrs.Model`` writes only ``compute_loss``, with two ``tfrs.tasks.Ranking`` tasks:

* interaction: each training row is one user event with a candidate list
  ``[positive, negatives...]`` (hard negatives from the retrieval model's top-K, random
  ones from the catalogue); ``listwise`` = softmax cross-entropy over the list,
  ``pointwise`` = binary cross-entropy per candidate;
* rating: squared error of the positive's predicted rating (rows without a rating weigh 0).

With a ranker that reads retrieval (``network.retrieval_dim``), ``distillation_weight`` adds
the cross-entropy of the ranker's softmax over the candidate list against the frozen
retrieval scores' softmax at ``distillation_temperature`` (retrieval's order as a soft target).

``loss = interaction_weight * interaction + rating_weight * rating (+ distillation)``, each a mean over the
global batch (:func:`tfrec_attn.tasks.global_weighted_mean`), so any ``tf.distribute``
strategy trains the same objective.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_attn.features.serializable import register
from tfrec_attn.models.base import RecommenderModel
from tfrec_attn.tasks import global_weighted_mean

INTERACTION_LOSSES = ("listwise", "pointwise")


def _deserialize(value):
    return tf.keras.utils.deserialize_keras_object(value) if isinstance(value, dict) else value


@register
class RankingModel(RecommenderModel):
    """Target-attention ranking model.

    Args:
        network: RankingNetwork (or its serialized config).
        interaction_loss: str. ``listwise`` or ``pointwise``.
        interaction_weight: float. Weight of the interaction loss (0: rating only).
        rating_weight: float. Weight of the rating loss (0: interaction only).
        distillation_weight: float. Weight of the distillation loss (needs a network that
            reads retrieval).
        distillation_temperature: float.

    Training inputs: ``(features, labels)`` with the network's input dict as features and
    ``labels = {"clicks": float [b, C] (1 for the positive), "rating": float [b] (the
    positive's rating, NaN if none)}``.

    Example:
        >>> model = build_ranking_model(config.model, config.loss, vocab.num_indices)
        >>> out = model({"history": h, "history_ratings": r, "history_gaps": g,
        ...              "candidates": c, "user_features": u})
        >>> out["scores"], out["rating"], out["attention"]  # [b, C], [b, C], [b, C, H]
    """

    def __init__(self, network, interaction_loss: str = "listwise", interaction_weight: float = 1.0,
                 rating_weight: float = 1.0, distillation_weight: float = 0.0, distillation_temperature: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        if interaction_loss not in INTERACTION_LOSSES:
            raise ValueError(f"interaction_loss must be one of {', '.join(INTERACTION_LOSSES)}, "
                             f"got {interaction_loss!r}")
        self.network = _deserialize(network)
        self.interaction_loss = interaction_loss
        self.interaction_weight = float(interaction_weight)
        self.rating_weight = float(rating_weight)
        self.distillation_weight = float(distillation_weight)
        self.distillation_temperature = float(distillation_temperature)
        if self.distillation_weight and not self.network.retrieval_dim:
            raise ValueError("distillation_weight needs a network that reads retrieval (retrieval_dim > 0)")
        none = tf.keras.losses.Reduction.NONE
        loss = tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction=none) \
            if interaction_loss == "listwise" else tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction=none)
        self.interaction_task = tfrs.tasks.Ranking(loss=loss)
        # Two-stage order = ranker score + retrieval_weight * retrieval score (chosen on validation,
        # saved with the weights; :mod:`tfrec_attn.evaluation.two_stage`).
        self.retrieval_weight = tf.Variable(0.0, trainable=False, name="retrieval_weight")
        self.rating_task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError(reduction=none))

    def get_config(self):
        return {"name": self.name, "network": tf.keras.utils.serialize_keras_object(self.network),
                "interaction_loss": self.interaction_loss, "interaction_weight": self.interaction_weight,
                "rating_weight": self.rating_weight, "distillation_weight": self.distillation_weight,
                "distillation_temperature": self.distillation_temperature}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def build_weights(self):
        """Creates every weight (a call on a dummy batch); returns the model."""
        self(self.network.dummy_inputs())
        return self

    def optimizer_groups(self):
        """Every trainable variable except an unused head's (no gradient, no warning)."""
        unused = [name for name, weight in (("score", self.interaction_weight), ("rating", self.rating_weight))
                  if not weight]
        if not unused:
            return super().optimizer_groups()
        skip = {id(v) for name in unused for v in self.network.get_layer(name).trainable_variables}
        return [(self.optimizer, [v for v in self.trainable_variables if id(v) not in skip])]

    def call(self, features, training=False):
        return self.network(features, training=training)

    @tf.function(reduce_retracing=True)
    def predict_batch(self, features):
        """The network's outputs in inference mode (a traced function: evaluation's path)."""
        return self.network(features, training=False)

    def compute_loss(self, inputs, training=False):
        features, labels = inputs
        out = self.network(features, training=training)
        total = 0.0
        if self.interaction_weight:
            clicks = tf.cast(labels["clicks"], tf.float32)
            scores = tf.cast(out["scores"], tf.float32)
            if self.interaction_loss == "listwise":
                losses = self.interaction_task(clicks, scores, compute_metrics=False)  # [b]
            else:  # one binary decision per (row, candidate)
                losses = self.interaction_task(clicks[..., tf.newaxis], scores[..., tf.newaxis],
                                               compute_metrics=False)
            total += self.interaction_weight * global_weighted_mean(losses)
        if self.distillation_weight:
            teacher = tf.nn.softmax(tf.cast(out["retrieval_scores"], tf.float32) / self.distillation_temperature)
            losses = tf.nn.softmax_cross_entropy_with_logits(tf.stop_gradient(teacher),
                                                             tf.cast(out["scores"], tf.float32))
            total += self.distillation_weight * global_weighted_mean(losses)
        if self.rating_weight:
            rating = tf.cast(labels["rating"], tf.float32)
            known = tf.math.is_finite(rating)
            predicted = tf.cast(out["rating"][:, 0], tf.float32)
            losses = self.rating_task(tf.where(known, rating, 0.0)[:, tf.newaxis], predicted[:, tf.newaxis],
                                      compute_metrics=False)
            total += self.rating_weight * global_weighted_mean(losses, tf.cast(known, tf.float32))
        return total


def build_ranking_model(model_config, loss_config, num_indices: int, *, item_features=None,
                        user_feature_sizes=(), rating_range=(1.0, 5.0, 3.5), retrieval_items=None,
                        retrieval_interests: int = 1) -> RankingModel:
    """The ranking model of the run config's ``model`` and ``loss`` sections, weights created.

    Args:
        item_features: float [num_indices, F] or None. Item side features
            (:func:`tfrec_attn.features.items.item_feature_table`).
        user_feature_sizes: list of int. Vocabulary sizes of the user features.
        rating_range: (min, max, mean) of the training ratings.
        retrieval_items: float [num_indices, d] or None. The frozen retrieval model's item
            vectors in this vocabulary's indices (``model.retrieval_score``).
        retrieval_interests: int. Its query vectors per user.
    """
    from tfrec_attn.layers.ranking_network import RankingNetwork

    m = model_config
    low, high, mean = (float(v) for v in rating_range)
    network = RankingNetwork(
        num_indices, m.embedding_dim, m.attention, m.attention_units, m.normalization, m.num_heads,
        m.num_blocks, m.mlp_units, m.dropout,
        item_feature_dim=0 if item_features is None else int(item_features.shape[1]),
        num_ratings=int(round(high)) if m.rating_embeddings else 0, time_gaps=m.time_embeddings,
        user_feature_sizes=list(user_feature_sizes) if m.user_features else [],
        rating_min=low, rating_max=high, rating_mean=min(max(mean, low + 1e-3), high - 1e-3),
        history_mean=m.history_mean,
        retrieval_dim=0 if retrieval_items is None else int(retrieval_items.shape[1]),
        retrieval_interests=retrieval_interests, retrieval_embeddings=m.retrieval_embeddings,
        rating_biases=m.rating_biases, name="ranking_network")
    model = RankingModel(network, loss_config.interaction, loss_config.interaction_weight,
                         loss_config.rating_weight, loss_config.distillation_weight,
                         loss_config.distillation_temperature, name="ranking")
    model.build_weights()
    if item_features is not None:
        network.items.set_features(item_features)
    if retrieval_items is not None:
        network.set_retrieval_items(retrieval_items)
    return model
