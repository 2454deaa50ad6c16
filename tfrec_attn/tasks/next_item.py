"""Softmax objectives for next-item prediction.

Every task takes query embeddings ``[n, d]`` (the full and sampled softmax also ``[n, K, d]``:
K interests per query, a candidate scored by its best, :func:`dot_scores`), their next-item labels ``[n]`` (model
indices; 0 = padding and 1 = OOV are never targets), a :class:`Candidates` view of the
item tower, and optional per-query ``weights`` ``[n]`` (0 for padding positions when
shapes must stay static, e.g. under XLA). A task asks the item tower only for the
candidates it needs:

* :class:`FullSoftmaxTask`: softmax over the whole catalogue (the ``[V, d]`` table; exact).
* :class:`SampledSoftmaxTask`: the labels' and ``num_negatives`` sampled items' vectors.
  Negatives are drawn with replacement from ``(count + 1) ** alpha`` with a *stateless*
  sampler keyed on the training step, so every replica of a ``tf.distribute`` strategy
  (and a single device) draws the same negatives; logQ correction and accidental-hit
  removal as in ``tf.nn.sampled_softmax_loss``. With at least as many negatives as
  catalogue items it is exactly the full softmax (label smoothing included).
* :class:`InBatchSoftmaxTask`: ``tfrs.tasks.Retrieval`` over the labels of the *global*
  batch: candidate vectors and ids are all-gathered across replicas, so N replicas train
  the same objective as one device at the same global batch.

Label smoothing (``label_smoothing`` = eps): each query's loss is ``(1 - eps) * CE(label) +
eps * mean CE`` over every real item (full softmax, and the sampled one in its exact mode)
or over its sampled / in-batch negatives (accidental hits excluded).

Hard negatives (``hard_negative_beta`` = beta > 0; REMI's interest-aware hard negative
mining, Xie et al., RecSys 2023): in the partition function each negative j counts with the
weight ``w_j = M * softmax_j(beta * logit_j)`` over the query's M negatives (held fixed: no
gradient flows through the weights), so the negatives the query already scores high — for
several interests, those close to its best interest — weigh more; beta = 0 is the plain
softmax. The full and sampled softmax take it.

Losses are means over the **global** batch (``tf.nn.compute_average_loss`` semantics with
per-position weights): each replica divides its weighted sum by the weight total summed
over replicas, because Keras sums gradients over replicas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_attn.features.serializable import register
from tfrec_attn.features.vocab import FIRST_ITEM_INDEX

LOSS_TYPES = ("full", "sampled", "in_batch")
_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class Candidates:
    """What a task may ask of the item tower.

    Attributes:
        embed: ``ids [...] -> float [..., d]``: candidate vectors of these model indices.
        table: ``() -> float [V, d]``: every index's vector (full softmax only).
    """

    embed: Callable
    table: Callable


def _replica_context():
    """The replica context when several replicas train in sync, else None."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def global_weighted_mean(losses, weights=None):
    """``sum(w * loss) / sum(w)`` over the global batch, as this replica's share.

    Summed over replicas (what Keras does with gradients) this is the weighted mean of
    the whole global batch, so one device and N replicas take the same step.
    """
    losses = tf.cast(losses, tf.float32)
    weights = tf.ones_like(losses) if weights is None else tf.cast(weights, tf.float32)
    numerator = tf.reduce_sum(losses * weights)
    denominator = tf.stop_gradient(tf.reduce_sum(weights))
    context = _replica_context()
    if context is not None:
        denominator = context.all_reduce(tf.distribute.ReduceOp.SUM, denominator)
    return tf.math.divide_no_nan(numerator, denominator)


def log_partition(logits, negatives, hard_negative_beta: float = 0.0):
    """``log sum_j exp(logit_j)`` per row [n], each negative column weighted by REMI's
    ``w_j = M * softmax_j(beta * logit_j)`` over the row's M negatives (``negatives`` [n, m]:
    1 at a negative; other columns keep weight 1). beta = 0: the plain logsumexp."""
    if not hard_negative_beta:
        return tf.reduce_logsumexp(logits, axis=-1)
    is_negative = negatives > 0
    scaled = tf.where(is_negative, hard_negative_beta * tf.stop_gradient(logits), _NEG)
    count = tf.maximum(tf.reduce_sum(negatives, axis=-1, keepdims=True), 1.0)
    log_weights = tf.math.log(count) + scaled - tf.reduce_logsumexp(scaled, axis=-1, keepdims=True)
    return tf.reduce_logsumexp(tf.where(is_negative, logits + log_weights, logits), axis=-1)


def smoothed_cross_entropy(logits, label, negatives, label_smoothing: float, hard_negative_beta: float = 0.0):
    """Per-row ``(1 - eps) * CE(label) + eps * mean CE over the negatives``.

    Args:
        logits: float [n, m].
        label: float [n, m], one-hot.
        negatives: float [n, m], 1 where a column is a negative (excluded columns are 0
            here and carry ~-inf logits).
        label_smoothing: float eps.
        hard_negative_beta: float. > 0: the partition function weighs the negatives by
            :func:`log_partition`.
    """
    log_z = log_partition(logits, negatives, hard_negative_beta)
    losses = log_z - tf.reduce_sum(label * logits, axis=-1)
    if not label_smoothing:
        return losses
    uniform = tf.math.divide_no_nan(tf.reduce_sum(negatives * (log_z[:, tf.newaxis] - logits), axis=-1),
                                    tf.reduce_sum(negatives, axis=-1))
    return (1.0 - label_smoothing) * losses + label_smoothing * uniform


def dot_scores(queries, vectors) -> tf.Tensor:
    """Query-candidate scores [n, m] of ``queries`` [n, d] and ``vectors`` [m, d]. Queries
    [n, K, d] are several interests per row: a candidate scores its best (the max over K),
    as retrieval scores them."""
    if queries.shape.rank == 3:
        return tf.reduce_max(tf.einsum("nkd,md->nkm", queries, vectors), axis=1)
    return tf.matmul(queries, vectors, transpose_b=True)


def paired_scores(queries, vectors) -> tf.Tensor:
    """Each row's score of its own candidate: [n] from ``queries`` [n, d] or [n, K, d] and
    ``vectors`` [n, d]."""
    if queries.shape.rank == 3:
        return tf.reduce_max(tf.einsum("nkd,nd->nk", queries, vectors), axis=1)
    return tf.reduce_sum(queries * vectors, axis=-1)


def _real_item_mask(num_indices) -> tf.Tensor:
    return tf.concat([tf.zeros([FIRST_ITEM_INDEX]), tf.ones([num_indices - FIRST_ITEM_INDEX])], 0)


@register
class FullSoftmaxTask(tf.keras.layers.Layer):
    """Cross-entropy over every catalogue item.

    Args:
        temperature: float. Logits are divided by it.
        label_smoothing: float. Mass spread uniformly over the other real items.
        hard_negative_beta: float. > 0: REMI's hard-negative weights in the partition
            function (:func:`log_partition`; every real item but the label is a negative).
    """

    def __init__(self, temperature: float = 1.0, label_smoothing: float = 0.0, hard_negative_beta: float = 0.0,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")  # losses in float32, whatever the mixed-precision policy
        super().__init__(**kwargs)
        self.temperature = temperature
        self.label_smoothing = label_smoothing
        self.hard_negative_beta = hard_negative_beta
        self.built = True  # no weights: nothing to build (and a SavedModel need not say so)

    def call(self, queries, labels, candidates: Candidates, weights=None, step=None):
        table = tf.cast(candidates.table(), tf.float32)
        logits = dot_scores(tf.cast(queries, tf.float32), table) / self.temperature
        num_indices = tf.shape(table)[0]
        real = _real_item_mask(num_indices)
        logits = logits + (1.0 - real)[tf.newaxis] * _NEG
        if self.hard_negative_beta:  # the same losses, over the weighted partition function
            one_hot = tf.one_hot(labels, num_indices)
            log_z = log_partition(logits, real[tf.newaxis] * (1.0 - one_hot), self.hard_negative_beta)
            log_probabilities = logits - log_z[:, tf.newaxis]
            eps = self.label_smoothing
            target = one_hot * (1.0 - eps) + eps * real[tf.newaxis] / tf.reduce_sum(real)
            losses = -tf.reduce_sum(target * tf.where(real[tf.newaxis] > 0, log_probabilities, 0.0), axis=-1)
        elif self.label_smoothing:
            eps = self.label_smoothing
            target = tf.one_hot(labels, num_indices) * (1.0 - eps)
            target += eps * real[tf.newaxis] / tf.reduce_sum(real)
            losses = -tf.reduce_sum(target * tf.nn.log_softmax(logits), axis=-1)
        else:
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return global_weighted_mean(losses, weights)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "label_smoothing": self.label_smoothing, "hard_negative_beta": self.hard_negative_beta}


@register
class SampledSoftmaxTask(tf.keras.layers.Layer):
    """Sampled softmax with frequency-proportional negatives and logQ correction.

    Args:
        num_indices: int. Vocabulary size including padding and OOV.
        num_negatives: int. Negatives drawn per step, shared by every query (and replica).
        alpha: float. Negatives ~ (count + 1) ** alpha.
        temperature: float.
        seed: int. Seeds the stateless sampler (with the training step).
        label_smoothing: float. Exact mode: as the full softmax. Sampled: the mass goes
            uniformly to the step's sampled negatives (other than the label).
        hard_negative_beta: float. > 0: REMI's hard-negative weights over the step's
            negatives (:func:`log_partition`; exact mode: as the full softmax).

    The sampling distribution is a non-trainable weight (checkpointed with the model):
    set it from the training counts with :meth:`set_item_counts`.
    """

    def __init__(self, num_indices: int, num_negatives: int = 256, alpha: float = 0.75,
                 temperature: float = 1.0, seed: int = 0, label_smoothing: float = 0.0,
                 hard_negative_beta: float = 0.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # losses in float32, whatever the mixed-precision policy
        super().__init__(**kwargs)
        self.num_indices = num_indices
        self.num_negatives = num_negatives
        self.alpha = alpha
        self.temperature = temperature
        self.seed = seed
        self.label_smoothing = label_smoothing
        self.hard_negative_beta = hard_negative_beta
        self.exact = num_negatives >= num_indices - FIRST_ITEM_INDEX
        self._full = FullSoftmaxTask(temperature, label_smoothing, hard_negative_beta,
                                     name="full_softmax") if self.exact else None
        self.log_probability = self.add_weight(
            name="log_sampling_probability", shape=(num_indices,), trainable=False,
            initializer=tf.keras.initializers.Constant(self._log_probability(np.zeros(num_indices))))
        self.built = True  # every weight exists

    def _log_probability(self, counts) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.float64).copy()
        weights = (counts + 1.0) ** self.alpha
        weights[:FIRST_ITEM_INDEX] = 0.0
        with np.errstate(divide="ignore"):
            log_p = np.log(weights / weights.sum())
        return np.maximum(log_p, _NEG).astype(np.float32)

    def set_item_counts(self, counts) -> None:
        """Training interactions per model index -> the sampling distribution."""
        self.log_probability.assign(self._log_probability(counts))

    def call(self, queries, labels, candidates: Candidates, weights=None, step=None):
        if self.exact:
            return self._full(queries, labels, candidates, weights)
        step = tf.constant(0, tf.int32) if step is None else tf.cast(step, tf.int32)
        seed = tf.stack([tf.constant(self.seed, tf.int32), step])  # int32: XLA's CPU kernel needs it
        sampled = tf.random.stateless_categorical(self.log_probability[tf.newaxis], self.num_negatives,
                                                  seed=seed, dtype=tf.int64)[0]  # [k], same everywhere
        log_expected = tf.math.log(float(self.num_negatives)) + self.log_probability  # log(k q)
        labels = tf.cast(labels, tf.int64)
        queries = tf.cast(queries, tf.float32) / self.temperature
        true_logits = paired_scores(queries, tf.cast(candidates.embed(labels), tf.float32))
        true_logits -= tf.gather(log_expected, labels)
        sampled_logits = dot_scores(queries, tf.cast(candidates.embed(sampled), tf.float32))
        sampled_logits -= tf.gather(log_expected, sampled)[tf.newaxis]
        hits = tf.equal(labels[:, tf.newaxis], sampled[tf.newaxis])  # the label is no negative
        sampled_logits = tf.where(hits, _NEG, sampled_logits)
        logits = tf.concat([true_logits[:, tf.newaxis], sampled_logits], axis=1)
        label = tf.one_hot(tf.zeros_like(labels), tf.shape(logits)[1])  # the label is column 0
        negatives = tf.concat([tf.zeros_like(true_logits[:, tf.newaxis]), tf.cast(~hits, tf.float32)], axis=1)
        losses = smoothed_cross_entropy(logits, label, negatives, self.label_smoothing, self.hard_negative_beta)
        return global_weighted_mean(losses, weights)

    def get_config(self):
        return {**super().get_config(), "num_indices": self.num_indices,
                "num_negatives": self.num_negatives, "alpha": self.alpha,
                "temperature": self.temperature, "seed": self.seed, "label_smoothing": self.label_smoothing,
                "hard_negative_beta": self.hard_negative_beta}


class SmoothedSoftmaxLoss(tf.keras.losses.Loss):
    """Cross-entropy over logits whose excluded entries (``tfrs`` accidental hits, pushed to
    ~``MIN_FLOAT``) take no part, with the mass ``label_smoothing`` spread uniformly over the
    remaining entries other than the label."""

    def __init__(self, label_smoothing: float, **kwargs):
        super().__init__(reduction=tf.keras.losses.Reduction.NONE, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        logits = tf.cast(y_pred, tf.float32)
        negatives = tf.cast(logits > -1e30, tf.float32) * (1.0 - y_true)
        return smoothed_cross_entropy(logits, y_true, negatives, self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@register
class InBatchSoftmaxTask(tf.keras.layers.Layer):
    """In-batch negatives via ``tfrs.tasks.Retrieval`` (logQ + accidental-hit removal).

    Args:
        num_indices: int. Vocabulary size including padding and OOV.
        temperature: float.
        max_positions: int. At most this many positions per replica act as queries (the
            score matrix is max_positions x global positions).
        label_smoothing: float. The mass goes to the query's in-batch negatives.

    The candidate sampling probability (for logQ) is a non-trainable weight, set from the
    training counts with :meth:`set_item_counts`.
    """

    def __init__(self, num_indices: int, temperature: float = 1.0, max_positions: int = 4096,
                 label_smoothing: float = 0.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # losses in float32, whatever the mixed-precision policy
        super().__init__(**kwargs)
        self.num_indices = num_indices
        self.temperature = temperature
        self.max_positions = max_positions
        self.label_smoothing = label_smoothing
        self.probability = self.add_weight(
            name="candidate_probability", shape=(num_indices,), trainable=False,
            initializer=tf.keras.initializers.Constant(1.0 / num_indices))
        self.retrieval = tfrs.tasks.Retrieval(
            loss=SmoothedSoftmaxLoss(label_smoothing) if label_smoothing else tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
            temperature=temperature, remove_accidental_hits=True)
        self.retrieval.built = True
        self.built = True  # every weight exists

    def set_item_counts(self, counts) -> None:
        counts = np.asarray(counts, dtype=np.float64)
        self.probability.assign((counts / max(counts.sum(), 1.0)).astype(np.float32))

    def call(self, queries, labels, candidates: Candidates, weights=None, step=None):
        if queries.shape.rank == 3:
            raise ValueError("loss.type=in_batch takes one query per position (tfrs.tasks.Retrieval); several "
                             "interests scored by their max need loss.type=full or sampled")
        n = tf.shape(labels)[0]
        keep = tf.random.shuffle(tf.range(n))[: self.max_positions]
        queries = tf.gather(queries, keep)
        labels = tf.cast(tf.gather(labels, keep), tf.int64)
        if weights is not None:
            weights = tf.gather(tf.cast(weights, tf.float32), keep)
            # Padding queries carry weight 0; padding labels must not collide as "hits".
            labels = tf.where(weights > 0, labels, -1 - tf.range(tf.shape(labels)[0], dtype=labels.dtype))
        vectors = tf.cast(candidates.embed(tf.maximum(labels, 0)), tf.float32)
        probability = tf.gather(self.probability, tf.maximum(labels, 0))
        context = _replica_context()
        if context is not None:  # the global batch's labels, this replica's first (its positives)
            vectors, labels, probability = _gather_others_after(context, vectors, labels, probability)
        losses = self.retrieval(
            query_embeddings=tf.cast(queries, tf.float32),
            candidate_embeddings=vectors,
            candidate_sampling_probability=probability,
            candidate_ids=labels,
            compute_metrics=False,
            compute_batch_metrics=False,
        )
        return global_weighted_mean(losses, weights)

    def get_config(self):
        return {**super().get_config(), "num_indices": self.num_indices,
                "temperature": self.temperature, "max_positions": self.max_positions,
                "label_smoothing": self.label_smoothing}


def _gather_others_after(context, *tensors):
    """All-gathers each tensor over replicas, this replica's rows first (order is free for
    candidates; the positives must stay on the diagonal). Differentiable."""
    sizes = context.all_gather(tf.shape(tensors[0])[:1], axis=0)  # [replicas]
    start = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
    end = start + tf.shape(tensors[0])[0]

    def mine_first(everything):  # slices, not a gather: their gradient stays dense for all_gather's
        return tf.concat([everything[start:end], everything[:start], everything[end:]], 0)

    return tuple(mine_first(context.all_gather(t, axis=0)) for t in tensors)


def build_task(loss_config, num_indices: int, seed: int = 0):
    """The task named by ``loss_config.type`` (one of :data:`LOSS_TYPES`)."""
    if loss_config.type == "full":
        return FullSoftmaxTask(loss_config.temperature, loss_config.label_smoothing,
                               loss_config.hard_negative_beta, name="task")
    if loss_config.type == "sampled":
        return SampledSoftmaxTask(num_indices, loss_config.num_negatives, loss_config.sampling_alpha,
                                  loss_config.temperature, seed=seed, label_smoothing=loss_config.label_smoothing,
                                  hard_negative_beta=loss_config.hard_negative_beta, name="task")
    if loss_config.type == "in_batch":
        return InBatchSoftmaxTask(num_indices, loss_config.temperature, loss_config.max_positions,
                                  loss_config.label_smoothing, name="task")
    raise ValueError(f"loss.type must be one of {', '.join(LOSS_TYPES)}, got {loss_config.type!r}")
