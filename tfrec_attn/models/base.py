"""The training step every tfrec_attn model shares (models write only ``compute_loss``)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs


def _dense(gradient: tf.IndexedSlices, variable) -> tf.Tensor:
    """The dense tensor of a sparse gradient (rows summed), shaped like its variable."""
    rows = tf.shape(variable, out_type=gradient.indices.dtype)[0]
    return tf.math.unsorted_segment_sum(gradient.values, gradient.indices, rows)


class RecommenderModel(tfrs.Model):
    """``tfrs.Model`` whose steps report one ``loss`` and work under any ``tf.distribute``
    strategy.

    ``compute_loss`` must return this replica's share of the global-batch mean (the
    tasks in :mod:`tfrec_attn.tasks` do), so that the sum over replicas — what Keras
    applies to gradients and, with ``distribute_reduction_method="sum"``, to the
    reported loss — is the mean over the global batch. Regularization losses are scaled
    by ``1 / num_replicas`` for the same reason. ``optimizer.compute_gradients`` applies loss
    scaling when the optimizer is a ``LossScaleOptimizer`` (float16 mixed precision).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.distribute_reduction_method = "sum"

    def _total_loss(self, loss):
        if not self.losses:
            return loss
        return loss + tf.nn.scale_regularization_loss(tf.add_n([tf.cast(x, loss.dtype) for x in self.losses]))

    def optimizer_groups(self):
        """(optimizer, variables) pairs; by default the compiled optimizer for everything.
        A model with parts that train at their own rate (a fine-tuned text encoder) returns
        one pair per part; every optimizer must be a model attribute (checkpointed)."""
        return [(self.optimizer, self.trainable_variables)]

    def train_step(self, inputs):
        groups = self.optimizer_groups()
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            total = self._total_loss(loss)
        if len(groups) == 1:
            optimizer, variables = groups[0]
            per_group = [optimizer.compute_gradients(total, variables, tape=tape)]
        else:
            flat = [v for _, variables in groups for v in variables]
            gradients, start, per_group = tape.gradient(total, flat), 0, []
            for _, variables in groups:
                per_group.append(list(zip(gradients[start:start + len(variables)], variables)))
                start += len(variables)
        for (optimizer, _), gradients in zip(groups, per_group):
            if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
                # TF's collective gather of sparse (IndexedSlices) gradients needs the same number
                # of rows on every worker, which batches of different lengths do not have: reduce
                # embedding gradients dense across workers (fine up to ~10^6 rows; docs/distributed.md).
                gradients = [(_dense(g, v) if isinstance(g, tf.IndexedSlices) else g, v) for g, v in gradients]
            optimizer.apply_gradients(gradients)
        return {"loss": loss}

    def test_step(self, inputs):
        return {"loss": self.compute_loss(inputs, training=False)}
