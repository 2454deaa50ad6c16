"""GLocal-K (Han et al., CIKM 2021): an item-based autoencoder that completes the rating matrix,
with locally kernelised weights, fine-tuned on the rating matrix convolved with a global kernel.

The model is transductive, as item-based AutoRec is: an item's input is its column of the
training rating matrix (one rating per user, 0 = unrated); its output, the completed column.
``r(u, i)`` is read at user ``u`` of item ``i``'s output. Training:

* **pre-training** (the first ``pretrain_steps`` steps): the autoencoder reconstructs each item's
  observed ratings (masked squared error) with ``LocalKernelDense`` layers; their ``l2`` and
  ``sparsity`` penalties regularise it;
* **fine-tuning** (``global_kernel``, after that): the whole matrix's reconstruction makes a
  ``size x size`` filter (:class:`~tfrec_attn.layers.kernels.GlobalKernel`); the autoencoder
  then reads the rating matrix convolved with it, and trains on, as before, the observed
  ratings.

A batch is a set of items (``items`` int [b]: matrix rows) and, for each, its ``rows`` [b, size,
users]: its own row of the matrix between ``size // 2`` neighbours on each side (the convolution's
window). The filter of a batch is estimated from the batch's reconstructions (scaled to the
catalogue); with the whole catalogue in one batch (the default, as in GLocal-K) it is exact.
"""

from __future__ import annotations

import tensorflow as tf

from tfrec_attn.features.serializable import register
from tfrec_attn.layers.kernels import GlobalKernel, LocalKernelDense, row_windows
from tfrec_attn.models.base import RecommenderModel
from tfrec_attn.tasks.next_item import global_weighted_mean


@register
class KernelRatingAutoencoder(RecommenderModel):
    """Args:
        num_items: int. Rows of the rating matrix.
        num_users: int. Its columns (the autoencoder's input and output width).
        hidden_units: int. Width of each hidden layer (sigmoid).
        hidden_layers: int.
        kernel_dim: int. Dimension of the local kernels' points.
        l2: float. Weight penalty of each layer (GLocal-K's ``lambda_2``).
        sparsity: float. Kernel penalty of each layer (``lambda_s``).
        global_kernel: bool. Fine-tune with the global kernel after ``pretrain_steps``.
        global_kernel_size: int. The filter's side.
        dot_scale: float. The filter's scale.
        residual_kernel: bool. The filter is the identity plus the learned one, which starts at 0
            (fine-tuning starts from the pre-trained model; GLocal-K's: a random filter).
        pretrain_steps: int. Training steps before fine-tuning starts.
        rating_min, rating_max: float. Predictions are clipped into this range.
    """

    def __init__(self, num_items: int, num_users: int, hidden_units: int = 500, hidden_layers: int = 2,
                 kernel_dim: int = 5, l2: float = 20.0, sparsity: float = 0.006, global_kernel: bool = True,
                 global_kernel_size: int = 3, dot_scale: float = 1.0, residual_kernel: bool = True,
                 pretrain_steps: int = 0,
                 rating_min: float = 1.0, rating_max: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.num_users = int(num_items), int(num_users)
        self.hidden_units, self.hidden_layers, self.kernel_dim = int(hidden_units), int(hidden_layers), int(kernel_dim)
        self.l2, self.sparsity = float(l2), float(sparsity)
        self.global_kernel, self.global_kernel_size = bool(global_kernel), int(global_kernel_size)
        self.dot_scale, self.pretrain_steps = float(dot_scale), int(pretrain_steps)
        self.residual_kernel = bool(residual_kernel)
        self.rating_min, self.rating_max = float(rating_min), float(rating_max)
        self.encoder = [LocalKernelDense(hidden_units, kernel_dim, "sigmoid", l2, sparsity, name=f"hidden_{k}")
                        for k in range(hidden_layers)]
        self.decoder = LocalKernelDense(num_users, kernel_dim, None, l2, sparsity, name="output")
        self.kernel = GlobalKernel(num_items, global_kernel_size, dot_scale, residual_kernel, name="global_kernel") \
            if global_kernel else None
        # Training steps taken (checkpointed with the weights): which stage a restored model is in.
        self.steps = tf.Variable(0, trainable=False, dtype=tf.int64, name="steps",
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    @property
    def window(self) -> int:
        """Rows per item in a batch: the item's and its neighbours' (the filter's side)."""
        return self.global_kernel_size if self.global_kernel else 1

    def build_weights(self) -> KernelRatingAutoencoder:
        """Creates every weight (one pass of each stage over an empty matrix); returns self."""
        self.complete(tf.zeros([self.num_items, self.num_users]), fine_tuned=True)
        self.built = True  # a subclassed model is "built" once called; its weights exist now
        return self

    def autoencode(self, x):
        for layer in self.encoder:
            x = layer(x)
        return self.decoder(x)

    def penalty(self) -> tf.Tensor:
        return tf.add_n([layer.penalty() for layer in [*self.encoder, self.decoder]])

    def fine_tuning(self) -> tf.Tensor:
        """bool []: whether the global kernel is on (after ``pretrain_steps`` training steps)."""
        return tf.logical_and(tf.constant(self.global_kernel), self.steps >= self.pretrain_steps)

    def reconstruct(self, items, rows):
        """float [b, users]: the completed rows of ``items`` (unclipped) from their ``rows``
        [b, window, users]; the global kernel's filter is estimated from these items."""
        reconstruction = self.autoencode(rows[:, self.window // 2])
        if not self.global_kernel:
            return reconstruction
        return tf.cond(self.fine_tuning(),
                       lambda: self.autoencode(self.kernel(reconstruction, rows, items)),
                       lambda: reconstruction)

    def complete(self, matrix, fine_tuned=None):
        """float [items, users]: the completed rating matrix, clipped into the rating range.

        Args:
            matrix: float [num_items, num_users]. Known ratings, 0 = unknown.
            fine_tuned: bool or None. The stage to apply (None: the one training reached).
        """
        matrix = tf.convert_to_tensor(matrix, tf.float32)
        reconstruction = self.autoencode(matrix)
        if self.global_kernel:
            stage = self.fine_tuning() if fine_tuned is None else tf.constant(bool(fine_tuned))
            reconstruction = tf.cond(
                stage, lambda: self.autoencode(self.kernel(reconstruction, row_windows(matrix, self.window))),
                lambda: reconstruction)
        return tf.clip_by_value(reconstruction, self.rating_min, self.rating_max)

    def compute_loss(self, inputs, training=False):
        items, rows = inputs["items"], inputs["rows"]
        target = rows[:, self.window // 2]
        prediction = self.reconstruct(items, rows)
        observed = tf.cast(target > 0, tf.float32)
        errors = 0.5 * tf.reduce_sum(observed * tf.square(target - prediction), axis=1)
        # GLocal-K's objective (squared errors summed over every observed rating + the penalties)
        # divided by the catalogue's size: this batch's mean item error + the penalty's share.
        return global_weighted_mean(errors) + tf.nn.scale_regularization_loss(self.penalty() / self.num_items)

    def train_step(self, inputs):
        logs = super().train_step(inputs)
        self.steps.assign_add(1)
        return logs

    def get_config(self):
        return {"num_items": self.num_items, "num_users": self.num_users, "hidden_units": self.hidden_units,
                "hidden_layers": self.hidden_layers, "kernel_dim": self.kernel_dim, "l2": self.l2,
                "sparsity": self.sparsity, "global_kernel": self.global_kernel,
                "global_kernel_size": self.global_kernel_size, "dot_scale": self.dot_scale,
                "residual_kernel": self.residual_kernel,
                "pretrain_steps": self.pretrain_steps, "rating_min": self.rating_min, "rating_max": self.rating_max}
