"""The package's Keras registration: every layer and model of ours is serializable under the
``tfrec_attn`` package name (``tfrec_attn>UserTower``), so a saved model config rebuilds it."""

import tensorflow as tf

register = tf.keras.utils.register_keras_serializable(package="tfrec_attn")
