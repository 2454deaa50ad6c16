"""The kernel autoencoder recipe (``recipe: kernel_autoencoder``): GLocal-K on a rating split.

    >>> result = train(load_config("training/configs/ml100k_glocal_k.yaml"), read_movielens("ml-100k"),
    ...                "runs/glocal-k")
    >>> result.metrics["test"]  # {"RMSE": ..., "MAE": ..., "baseline_RMSE": ...}

The split, its selection hold-out and the test report are the rating recipe's
(:class:`~tfrec_attn.training.rating.RatingSplitRecipe`): both rating recipes select on the same
ratings, so their validation predictions can be compared and blended. What is particular:

* the rating matrix: one row per item of the model vocabulary (most rated first; row 0
  padding and row 1 the out-of-vocabulary item stay empty), one column per user with a
  training rating; 0 = unrated. Selection trains on, and validates from, the matrix without the
  hold-out; the refit (``train.refit_with_validation``, default on: only the epoch count comes
  from validation) and the test read every training rating;
* an example is an item (its row and the global kernel's neighbour rows); an epoch is
  ``train.passes_per_epoch`` passes over the catalogue in batches of ``train.batch_size`` items
  (by default one batch: the whole catalogue, as GLocal-K trains);
* the global kernel joins after ``model.pretrain_epochs`` epochs of pre-training (counted in
  the model's steps, so a resumed run continues in the right stage);
* a user without a training rating has no column: their rating of an item is the item's mean
  completed rating over every user (an item without one is the out-of-vocabulary row's).
"""

from __future__ import annotations

import math

import numpy as np

from tfrec_attn.features.vocab import ItemVocabulary
from tfrec_attn.training.rating import RatingSplitRecipe
from tfrec_attn.training.recipe import register_recipe

MATRIX_FILE = "rating_matrix.npz"  # in the run directory: the training ratings the export completes


@register_recipe("kernel_autoencoder")
class KernelAutoencoderRecipe(RatingSplitRecipe):
    """GLocal-K's item-based autoencoder on a :class:`~tfrec_attn.data.RatingSplit` (see the
    module docstring).

    Args:
        config: KernelAutoencoderConfig.
        dataset: Dataset. Ratings (``split`` default: its GroupLens fold ``split.fold``).
        split: RatingSplit or None.
    """

    def __init__(self, config, dataset, split=None):
        super().__init__(config, dataset, split)
        self.users = None
        self._matrices: dict = {}

    # -- preparation -----------------------------------------------------------------------
    def prepare(self, run):
        train = self.split.train
        self.vocabulary = self._item_vocabulary()
        rated = np.isfinite(train.ratings)
        self.users = np.unique(train.user_ids[rated].astype(str))
        ratings = train.ratings[rated]
        self.rating_range = (float(ratings.min()), float(ratings.max()))
        if self.rating_range[0] <= 0:
            raise ValueError(f"split {self.split.name!r}: ratings must be > 0 (0 marks an unrated cell of the "
                             f"autoencoder's matrix), got a minimum of {self.rating_range[0]:g}")
        if run is not None:
            self.vocabulary.save(run.vocab_file("items.txt"))
            matrix = self.matrix(True)
            rows, columns = np.nonzero(matrix)
            # What the export completes, so that a run exports without its data.
            np.savez_compressed(run.file(MATRIX_FILE), users=self.users.astype(str), rows=rows, columns=columns,
                                ratings=matrix[rows, columns], rating_range=np.asarray(self.rating_range))

    def _restore_files(self, run) -> None:
        self.vocabulary = ItemVocabulary.load(run.vocab_file("items.txt"))
        with np.load(run.file(MATRIX_FILE)) as saved:
            self.users = saved["users"]
            self.rating_range = tuple(float(x) for x in saved["rating_range"])
            if self.split is None:
                matrix = np.zeros((self.num_items, len(self.users)), np.float32)
                matrix[saved["rows"], saved["columns"]] = saved["ratings"]
                self._matrices[True] = matrix

    @property
    def num_items(self) -> int:
        return self.vocabulary.num_indices

    def _user_columns(self, user_ids) -> np.ndarray:
        """int [n]: each user's column, -1 for a user without a training rating."""
        user_ids = np.asarray(user_ids).astype(str)
        position = np.clip(np.searchsorted(self.users, user_ids), 0, len(self.users) - 1)
        return np.where(self.users[position] == user_ids, position, -1)

    def matrix(self, include_validation: bool) -> np.ndarray:
        """float32 [items, users]: the training ratings (without the hold-out unless
        ``include_validation``), 0 = unrated; cached."""
        if include_validation not in self._matrices:
            train = self.split.train
            keep = np.isfinite(train.ratings) & (include_validation | ~self.is_validation)
            rows, columns = self.vocabulary.model_indices(train.item_ids[keep]), self._user_columns(train.user_ids[keep])
            matrix = np.zeros((self.num_items, len(self.users)), np.float32)
            matrix[rows, columns] = train.ratings[keep]  # a repeated (user, item): its last rating
            self._matrices[include_validation] = matrix
        return self._matrices[include_validation]

    # -- model and data --------------------------------------------------------------------
    def steps_per_batch_pass(self, global_batch_size: int) -> int:
        return math.ceil(self.num_items / min(global_batch_size, self.num_items))

    def pretrain_steps(self) -> int:
        return self.config.model.pretrain_epochs * self.steps_per_epoch(self.config.train.batch_size)

    def build_model(self, static_shapes=False):
        from tfrec_attn.models.rating_autoencoder import KernelRatingAutoencoder

        m = self.config.model
        return KernelRatingAutoencoder(
            self.num_items, len(self.users), hidden_units=m.hidden_units, hidden_layers=m.hidden_layers,
            kernel_dim=m.kernel_dim, l2=m.l2, sparsity=m.sparsity, global_kernel=m.global_kernel,
            global_kernel_size=m.global_kernel_size, dot_scale=m.dot_scale, residual_kernel=m.residual_kernel,
            pretrain_steps=self.pretrain_steps(),
            rating_min=self.rating_range[0], rating_max=self.rating_range[1]).build_weights()

    def num_examples(self, include_validation=False):
        return self.config.train.passes_per_epoch * self.num_items

    def steps_per_epoch(self, global_batch_size, include_validation=False):
        return self.config.train.passes_per_epoch * self.steps_per_batch_pass(global_batch_size)

    def dataset(self, input_context, include_validation=False, repeat=True):
        import tensorflow as tf

        from tfrec_attn.layers.kernels import row_windows

        c = self.config
        window = c.model.global_kernel_size if c.model.global_kernel else 1
        windows = row_windows(self.matrix(include_validation), window)
        batch = min(input_context.get_per_replica_batch_size(c.train.batch_size), self.num_items)
        items = tf.data.Dataset.range(self.num_items).shard(input_context.num_input_pipelines,
                                                            input_context.input_pipeline_id)
        items = items.shuffle(self.num_items, seed=c.seed, reshuffle_each_iteration=True)
        if repeat:
            items = items.repeat()
        return items.batch(batch, drop_remainder=repeat).map(
            lambda i: {"items": i, "rows": tf.gather(windows, i)}).prefetch(tf.data.AUTOTUNE)

    # -- evaluation ------------------------------------------------------------------------
    def completed(self, model, include_validation: bool) -> np.ndarray:
        """float [items, users]: the model's completion of :meth:`matrix`."""
        return model.complete(self.matrix(include_validation)).numpy()

    def ratings_from(self, completed: np.ndarray, user_ids, item_ids) -> np.ndarray:
        """float [n]: the completed matrix's rating of each (user, item); a user without a column
        gets the item's mean over every user."""
        from tfrec_attn.export.rating import with_unknown_user

        columns = self._user_columns(user_ids)
        columns[columns < 0] = len(self.users)  # the served table's unknown-user column
        return with_unknown_user(completed)[self.vocabulary.model_indices(np.asarray(item_ids)), columns]

    def predict_stage(self, model, stage):
        users, items, _ = self.stage_ratings(stage)
        # Validation reads the matrix the selection run trained on; the test every training rating.
        return self.ratings_from(self.completed(model, stage == "test"), users, items)

    def export(self, model, base_path, **options):
        """The ``rating`` SavedModel: (user id, item id) -> rating, from the completion of every
        training rating."""
        from tfrec_attn.export.rating import export_rating_table

        completed = self.completed(model, True)
        return [export_rating_table(completed, self.vocabulary, self.users, base_path,
                                    model_name=options.get("model_name") or self.config.export.model_name,
                                    version=options.get("version"))]
