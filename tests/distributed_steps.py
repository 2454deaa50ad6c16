"""Subprocess helper of tests/test_distribute.py (its own process: logical CPU devices must be
configured before TensorFlow starts).

    python tests/distributed_steps.py equivalence LOSS[,LOSS...] STEPS OUT.json    (a retrieval loss or ranking)
        for each LOSS, trains the same model for STEPS steps at the same global batch and seed
        on one device and on MirroredStrategy over 2 logical CPUs; writes, by loss, both losses
        and the largest weight difference (one process for all: TensorFlow starts once).
    python tests/distributed_steps.py parameter_server OUT.json     (TF_CONFIG of the chief set)
        the chief of a ParameterServerStrategy cluster trains a few steps; writes where the
        item embedding's shards live and the losses.
"""

import json
import sys

import tfrec_attn  # noqa: F401  (Keras 2 for TFRS)
from tfrec_attn.training import distribute


def _config(loss: str, extra=()):
    from tfrec_attn.config import load_config

    return load_config(None, [
        "model.embedding_dim=16", "model.num_blocks=1", "model.max_len=20", "model.dropout=0.0",
        f"loss.type={loss}", "loss.num_negatives=20", "train.batch_size=32", "train.learning_rate=0.01",
        "train.shuffle_ties=false", "train.bucket_by_length=false", "train.refit_with_validation=false",
        *extra])


def equivalence(losses: str, steps: int, out: str) -> None:
    distribute.split_cpu(2)
    with open(out, "w") as handle:
        json.dump({loss: _equivalence(loss, steps) for loss in losses.split(",")}, handle)


def _equivalence(loss: str, steps: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from tfrec_attn.data.synthetic import planted_sequences
    from tfrec_attn.training.engine import Trainer
    from tfrec_attn.training.retrieval import RetrievalRecipe

    data = planted_sequences(num_items=60, num_users=300)
    results = {}
    for name, strategy in (("one_device", tf.distribute.get_strategy()),
                           ("mirrored", distribute.make_strategy("mirrored"))):
        if loss == "ranking":  # the DIN ranker, random negatives, listwise loss
            from tfrec_attn.config import load_config
            from tfrec_attn.training.ranking import RankingRecipe

            config = load_config(None, ["recipe=ranking", "model.embedding_dim=16", "model.max_len=20",
                                        "model.dropout=0.0", "train.batch_size=32", "train.learning_rate=0.01"])
            recipe = RankingRecipe(config, data)
        else:
            config = _config(loss)
            recipe = RetrievalRecipe(config, data)
        trainer = Trainer(recipe, config, f"/tmp/unused-{name}", strategy=strategy, verbose=0)
        model = trainer.new_model()
        history = model.fit(trainer.dataset(), epochs=1, steps_per_epoch=steps, verbose=0)
        results[name] = {"loss": history.history["loss"][0], "replicas": strategy.num_replicas_in_sync,
                         "weights": [w.numpy() for w in model.trainable_weights]}
    difference = max(float(np.max(np.abs(a - b)))
                     for a, b in zip(results["one_device"]["weights"], results["mirrored"]["weights"]))
    scale = max(float(np.max(np.abs(w))) for w in results["one_device"]["weights"])
    return {"loss_one_device": results["one_device"]["loss"], "loss_mirrored": results["mirrored"]["loss"],
            "replicas": results["mirrored"]["replicas"], "max_weight_difference": difference, "weight_scale": scale}


def parameter_server(out: str) -> None:
    from tfrec_attn.data.synthetic import popularity_sequences
    from tfrec_attn.training.cluster import parse_tf_config
    from tfrec_attn.training.engine import Trainer
    from tfrec_attn.training.retrieval import RetrievalRecipe

    config = _config("sampled", ["train.strategy=parameter_server", "train.epochs=2", "train.eval_every=1",
                                 "train.patience=5"])
    data = popularity_sequences(4000, 200, mean_len=12, seed=0)  # ~1,100 items x 16 dims: 70 KB > 64 KB, 2 shards
    trainer = Trainer(RetrievalRecipe(config, data), config, out + ".run", verbose=0)
    assert trainer.parameter_server and parse_tf_config() is not None
    result = trainer.run(evaluate_test=False)
    table = result.model.item_tower.embedding.embeddings
    shards = getattr(table, "variables", [table])
    with open(out, "w") as handle:
        json.dump({"strategy": type(trainer.strategy).__name__,
                   "embedding_shards": [{"device": v.device, "shape": list(v.shape)} for v in shards],
                   "num_indices": result.model.num_indices, "epochs": result.metrics["epochs"],
                   "validation": result.metrics["validation"]}, handle)


if __name__ == "__main__":
    if sys.argv[1] == "equivalence":
        equivalence(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif sys.argv[1] == "parameter_server":  # every task of the cluster runs this
        from tfrec_attn.training.cluster import parse_tf_config

        tf_config = parse_tf_config()
        if tf_config["task"]["type"] in ("ps", "worker"):
            distribute.run_server(tf_config)
        else:
            parameter_server(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
