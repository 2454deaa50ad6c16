"""The kernels of GLocal-K (Han et al., "GLocal-K: Global and Local Kernels for Recommender
Systems", CIKM 2021): a dense layer whose weight matrix is masked by a learned local kernel,
and the global convolution kernel that the pre-trained autoencoder's output makes."""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register


@register
class LocalKernelDense(tf.keras.layers.Layer):
    """``y = activation(x @ (W * K) + b)`` where ``K[i, j] = max(0, 1 - |u_i - v_j|^2)``.

    Every input ``i`` and every unit ``j`` has a learned point in a ``kernel_dim``-dimensional
    space; a weight counts only where the two points are within distance 1, so the kernel
    learns which connections the layer has (a sparse, data-chosen weight pattern).

    Args:
        units: int. Output width.
        kernel_dim: int. Dimension of the points ``u`` (inputs) and ``v`` (units).
        activation: str or None. ``sigmoid`` in GLocal-K's hidden layers, None at the output.
        l2: float. ``l2 / 2 * |W|^2`` in :meth:`penalty`.
        sparsity: float. ``sparsity / 2 * |K|^2`` in :meth:`penalty` (fewer connections).

    Call arguments:
        x: float [b, n_in].

    Returns:
        float [b, units].
    """

    def __init__(self, units: int, kernel_dim: int = 5, activation: str | None = None, l2: float = 0.0,
                 sparsity: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.kernel_dim = int(units), int(kernel_dim)
        self.activation_name = activation
        self.activation = tf.keras.activations.get(activation)
        self.l2, self.sparsity = float(l2), float(sparsity)

    def build(self, input_shape):
        n_in = int(input_shape[-1])
        self.w = self.add_weight("w", (n_in, self.units), initializer="glorot_uniform")
        # Every pair starts connected (K ~ 1).
        self.u = self.add_weight("u", (n_in, self.kernel_dim), initializer=tf.keras.initializers.TruncatedNormal(
            stddev=1e-3))
        self.v = self.add_weight("v", (self.units, self.kernel_dim),
                                 initializer=tf.keras.initializers.TruncatedNormal(stddev=1e-3))
        self.b = self.add_weight("b", (self.units,), initializer="zeros")
        super().build(input_shape)

    def kernel(self) -> tf.Tensor:
        """float [n_in, units] in [0, 1]: the local kernel."""
        distance = (tf.reduce_sum(tf.square(self.u), 1, keepdims=True) + tf.reduce_sum(tf.square(self.v), 1)
                    - 2.0 * tf.matmul(self.u, self.v, transpose_b=True))
        return tf.nn.relu(1.0 - distance)

    def penalty(self) -> tf.Tensor:
        """The layer's regularization: ``l2 / 2 |W|^2 + sparsity / 2 |K|^2``."""
        return self.l2 * tf.nn.l2_loss(self.w) + self.sparsity * tf.nn.l2_loss(self.kernel())

    def call(self, x):
        return self.activation(tf.matmul(x, self.w * self.kernel()) + self.b)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "kernel_dim": self.kernel_dim,
                "activation": self.activation_name, "l2": self.l2, "sparsity": self.sparsity}


@register
class GlobalKernel(tf.keras.layers.Layer):
    """The global convolution kernel: a ``size x size`` filter made from the whole catalogue's
    reconstruction, convolved over the rating matrix (``relu``, zero padding).

    ``filter = reshape(mean_over_users(reconstruction) @ C, [size, size]) * dot_scale``, where
    ``C`` [items, size^2] is learned: each item's average reconstructed rating votes for a
    filter, so the filter summarises the catalogue. Convolving the rating matrix with it mixes
    each rating with its neighbours in the (item, user) grid before the autoencoder reads it.

    ``residual``: the filter is the identity (a 1 at its centre) plus the items' *mean* vote, with
    ``C`` starting at 0, so that fine-tuning starts from the pre-trained model exactly (the
    convolved matrix is the matrix) and moves it by about one learning rate a step. GLocal-K's
    filter (``residual`` False) is the votes' sum from a random ``C`` ~ N(0, 0.1): under Adam,
    whose step moves every ``C`` entry by about the learning rate, a sum over thousands of items
    changes the filter by several units in one step and undoes much of the pre-training.

    Args:
        num_items: int. Rows of the rating matrix.
        size: int. The filter's side (odd; 3 in GLocal-K).
        dot_scale: float. Scale of the filter.
        residual: bool. Identity + the learned filter, from 0.

    Call arguments:
        reconstruction: float [num_items, n_users]. The autoencoder's output over every item,
            or over the items of ``items``.
        rows: float [b, size, n_users]. For each item of the batch, its row of the rating
            matrix between its ``size // 2`` neighbours on each side (:func:`row_windows`).
        items: int [b] or None. The rows ``reconstruction`` holds (None: every item).

    Returns:
        float [b, n_users]: the batch's rows of the convolved matrix.
    """

    def __init__(self, num_items: int, size: int = 3, dot_scale: float = 1.0, residual: bool = True, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"size must be a positive odd number, got {size}")
        self.num_items, self.size, self.dot_scale = int(num_items), int(size), float(dot_scale)
        self.residual = bool(residual)

    def build(self, input_shape):
        self.c = self.add_weight("c", (self.num_items, self.size * self.size), initializer="zeros" if self.residual
                                 else tf.keras.initializers.TruncatedNormal(stddev=0.1))
        super().build(input_shape)

    def filter(self, reconstruction, items=None) -> tf.Tensor:
        """float [size, size]: the filter of a reconstruction of every item (``items`` None), or
        its estimate from the rows of ``items`` (int [b]) alone, scaled to the catalogue."""
        pooled = tf.reduce_mean(reconstruction, axis=1, keepdims=True)  # [rows, 1]
        votes, rows = self.c, tf.cast(self.num_items, pooled.dtype)
        if items is not None:
            votes, rows = tf.gather(self.c, items), tf.cast(tf.shape(items)[0], pooled.dtype)
        # The catalogue's sum of votes (GLocal-K), or their mean (residual), from these rows.
        scale = (1.0 if self.residual else tf.cast(self.num_items, pooled.dtype)) / rows
        learned = tf.reshape(tf.matmul(pooled, votes, transpose_a=True) * (scale * self.dot_scale),
                             [self.size, self.size])
        if self.residual:
            learned += tf.scatter_nd([[self.size // 2, self.size // 2]], [1.0], [self.size, self.size])
        return learned

    def convolve(self, kernel, rows) -> tf.Tensor:
        """float [b, users]: the centre rows of ``rows`` [b, size, users] convolved with ``kernel``
        (zero padding in the user direction), through a relu."""
        # Each example's window is one "VALID" image in the item direction, "SAME" in the user one.
        out = tf.nn.conv2d(rows[..., tf.newaxis], kernel[:, :, tf.newaxis, tf.newaxis], strides=1,
                           padding=[[0, 0], [0, 0], [self.size // 2, self.size // 2], [0, 0]])
        return tf.nn.relu(out[:, 0, :, 0])

    def call(self, reconstruction, rows, items=None):
        return self.convolve(self.filter(reconstruction, items), rows)

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items, "size": self.size, "dot_scale": self.dot_scale,
                "residual": self.residual}


def row_windows(matrix, size: int) -> tf.Tensor:
    """float [rows, size, columns]: each row of ``matrix`` between its ``size // 2`` neighbours on
    each side, zero rows past the ends (what :class:`GlobalKernel` convolves)."""
    matrix = tf.convert_to_tensor(matrix, tf.float32)
    half, rows = size // 2, tf.shape(matrix)[0]
    padded = tf.pad(matrix, [[half, half], [0, 0]])
    return tf.stack([padded[k:k + rows] for k in range(size)], axis=1)
