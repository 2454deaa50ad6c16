"""The training step every tfrec_attn model shares (models write only ``compute_loss``)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs


class RecommenderModel(tfrs.Model):
    """``tfrs.Model`` whose steps report one ``loss`` and work under any ``tf.distribute``
    strategy.

    ``compute_loss`` must return this replica's share of the global-batch mean (the
    tasks in :mod:`tfrec_attn.tasks` do), so that the sum over replicas — what Keras
    applies to gradients and, with ``distribute_reduction_method="sum"``, to the
    reported loss — is the mean over the global batch. Regularization losses are scaled
    by ``1 / num_replicas`` for the same reason. ``optimizer.minimize`` applies loss
    scaling when the optimizer is a ``LossScaleOptimizer`` (float16 mixed precision).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.distribute_reduction_method = "sum"

    def _total_loss(self, loss):
        if not self.losses:
            return loss
        return loss + tf.nn.scale_regularization_loss(tf.add_n([tf.cast(x, loss.dtype) for x in self.losses]))

    def train_step(self, inputs):
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            total = self._total_loss(loss)
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        return {"loss": loss}

    def test_step(self, inputs):
        return {"loss": self.compute_loss(inputs, training=False)}
