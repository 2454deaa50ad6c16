"""The main job's cold-start stage: the protocol's table of the one retrieval model, and one
new item added to the running server's ``retrieval`` model by its text."""

from __future__ import annotations

import os
import time

import numpy as np

from tfrec_attn.evaluation.cold_start import COLD_METRICS


def cold_start_table(dataset, split, retrieval_config, cold_config, output_dir: str, *, verbose: int = 0,
                     item_features=None):
    """Rows of the cold-start protocol: the main retrieval model's config trained again on
    the cold split (within ``cold_config.time_budget_seconds``, no refit) — for an ensemble,
    the one model and each of its parts alone (its id part: cold ids are OOV) — the
    content-only baseline (MiniLM cosine, no training) and MostPop.

    Returns:
        ``{"split": ..., "rows": ..., "item_tower": ...}``.
    """
    import dataclasses

    from tfrec_attn.baselines import ContentBaseline, MostPopBaseline
    from tfrec_attn.evaluation import cold_start_split, evaluate_cold_start
    from tfrec_attn.evaluation.retrieval import catalogue_scorer
    from tfrec_attn.training import train
    from tfrec_attn.training.retrieval import catalogue_text_features

    cold = cold_start_split(split, cold_config.fraction, seed=0)
    s = cold.summary()
    print(f"cold items: {s['cold_items']} (test targets of a seeded {cold_config.fraction:.0%} of users); "
          f"{s['removed_interactions']:,} interactions removed from training; cold test users "
          f"{s['cold_users']}, warm {s['warm_users']}", flush=True)
    tower = retrieval_config.model.item_tower
    config = dataclasses.replace(retrieval_config, train=dataclasses.replace(
        retrieval_config.train, time_budget_seconds=cold_config.time_budget_seconds, refit_with_validation=False))
    began = time.perf_counter()
    trained = train(config, dataset, os.path.join(output_dir, "cold_start", tower.type), verbose=verbose,
                    split=cold.split, evaluate_test=False)
    seconds = time.perf_counter() - began
    text_config = config if tower.reads_text else dataclasses.replace(
        config, model=dataclasses.replace(config.model, item_tower=dataclasses.replace(tower, type="text")))
    features = item_features if item_features is not None else \
        catalogue_text_features(text_config, dataset, cold.split)
    models = {ONE_MODEL.get(tower.type, f"{tower.type} tower"): trained.model}
    if tower.type == "ensemble":
        models["its id part alone (cold ids are OOV)"] = trained.model.id_model
        models[f"its {tower.text_part} part alone"] = trained.model.text_model
    rows = {}
    for name, model in models.items():
        scorer = catalogue_scorer(model, trained.vocabulary, cold.split,
                                  item_features=features if model.item_tower.reads_text else None)
        rows[name] = {**evaluate_cold_start(cold, scorer), "seconds": seconds}
    rows["content only (MiniLM cosine, no training)"] = evaluate_cold_start(cold, ContentBaseline(features).score_fn())
    rows["MostPop"] = evaluate_cold_start(cold, MostPopBaseline().fit(cold.split).score_fn())
    print(format_cold_table(rows), flush=True)
    return {"split": s, "rows": rows, "item_tower": tower.type,
            "combination": trained.metrics.get("combination"), "seconds": seconds,
            "new_item_calibration": (trained.metrics.get("calibration") or {}).get("new_item_calibration")}


# The one served model's row name, by item tower type.
ONE_MODEL = {"ensemble": "one model (id + text ensemble)", "id": "id tower (cold ids are OOV)",
             "text": "text tower", "hybrid": "hybrid tower"}


def format_cold_table(rows) -> str:
    """The protocol's rows as text: cold and warm HR/NDCG, the warm NDCG@10 without the cold
    items in the catalogue, and the calibration (cold vs warm top-10 appearances per wanted)."""
    width = max(len(n) for n in rows)
    head = (f"{'model':<{width}}  " + "  ".join(f"{p} {m:>7}" for p in ("cold", "warm") for m in COLD_METRICS)
            + "  warm NDCG@10 w/o cold  cold/warm top-10 rate")
    lines = [head]
    for name, r in rows.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{r[p][m]:>{len(p) + 8}.4f}" for p in ("cold", "warm")
                                                     for m in COLD_METRICS)
                     + f"  {r['warm_without_cold']['NDCG@10']:>21.4f}  {r['calibration']['cold_to_warm']:>21.2f}")
    return "\n".join(lines)


def new_item_demo(client, export_base: str, model_name: str, new_item, trained, split, dataset, k: int,
                  users_to_scan: int, seed: int) -> dict:
    """Adds ``new_item`` to the export (next version, no retraining), waits until the
    running server serves it, and reports the catalogue items nearest to it and the test
    users whose top ``k`` it now enters (asked over gRPC)."""
    import tensorflow as tf

    from tfrec_attn.data.dataset import Item
    from tfrec_attn.export.catalogue import add_items

    item = Item(new_item.item_id, new_item.title, tuple(new_item.genres), None, new_item.description)
    began = time.perf_counter()
    version_dir = add_items(export_base, {item.item_id: item}, model_name=model_name)
    version = int(os.path.basename(version_dir))
    deadline = time.time() + 120
    while client.status().get(version) != "AVAILABLE":
        if time.time() > deadline:
            raise RuntimeError(f"the server did not load {version_dir} within 120 s")
        time.sleep(0.2)
    seconds = time.perf_counter() - began
    print(f"added {item.item_id!r} ({item.text}) as version {version}; served after {seconds:.1f} s", flush=True)

    # Nearest catalogue items: the new vector (the export embeds the text in-graph) vs the
    # trained candidate vectors.
    loaded = tf.saved_model.load(version_dir)
    vector = loaded.signatures["embed_items"](item_ids=tf.constant([item.item_id]),
                                              item_texts=tf.constant([item.text]))["embeddings"].numpy()[0]
    table = trained.model.item_embeddings().numpy()
    if hasattr(trained.model, "text_slice"):  # an ensemble places a new item in its text part's space
        part = trained.model.text_slice
        vector, table = vector[part], trained.model.text_model.item_embeddings().numpy()
    cosine = table @ vector / np.maximum(np.linalg.norm(table, axis=1) * np.linalg.norm(vector), 1e-12)
    nearest = [{"item_id": str(trained.vocabulary.item_ids[i]), "title": dataset.item_title(
        str(trained.vocabulary.item_ids[i])), "cosine": float(cosine[i])} for i in np.argsort(-cosine)[:5]]

    rng = np.random.default_rng(seed)
    users = rng.choice(split.evaluated, size=min(users_to_scan, len(split.evaluated)), replace=False)
    reached = []
    for user in users:
        history = [str(i) for i in split.item_vocab[split.sequences[user]]]
        ranked = [i for i, _ in client.recommend(history, k=k)]
        if item.item_id in ranked:
            reached.append({"user_id": str(split.user_ids[user]), "rank": ranked.index(item.item_id) + 1,
                            "recent": [dataset.item_title(h) for h in history[-3:]]})
    reached.sort(key=lambda r: r["rank"])
    print(f"nearest items: {', '.join(n['title'] for n in nearest)}")
    print(f"now in the top {k} of {len(reached)} of {len(users)} test users asked over gRPC", flush=True)
    for r in reached[:3]:
        print(f"  user {r['user_id']} (rank {r['rank']}); recently: {'; '.join(r['recent'])}")
    return {"item_id": item.item_id, "text": item.text, "model": model_name, "version": version,
            "seconds_to_served": seconds,
            "nearest": nearest, "users_asked": len(users), "users_reached": reached}
