"""The training engine: one Keras trainer for every model recipe, under any tf.distribute
strategy, with the project's callbacks, checkpoints, curves and resume."""
