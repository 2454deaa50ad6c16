"""Learning-rate schedules the configs name (``train.learning_rate_schedule``)."""

from __future__ import annotations

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="tfrec_attn")
class LinearWarmup(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``learning_rate`` over ``warmup_steps``, then constant.

    (Cosine decay with warm-up is Keras' own ``CosineDecay(warmup_steps=...)``.)
    """

    def __init__(self, learning_rate: float, warmup_steps: int):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        fraction = tf.minimum(1.0, (step + 1.0) / max(1, self.warmup_steps))
        return self.learning_rate * fraction

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}
