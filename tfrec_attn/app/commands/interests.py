"""``tfrec-attn interests``: a multi-interest retrieval export's interests after a history —
each one's label, share of the history and most attended items — and the recommendations
each interest brings (the export's ``interests`` and ``serving_default`` signatures); with
an interest profile (``model.user_tower.profile``), the genres predicted for the next 10
items (its ``profile`` signature)."""

from __future__ import annotations

import json

from tfrec_attn.app.commands.common import CLIError, add_data_args, titles


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("interests", help="show a multi-interest model's interests after a history, with labels",
                              description="Reads HISTORY with a retrieval export trained with "
                                          "model.user_tower.interests > 1 and prints each interest: its label (the "
                                          "genres and salient words of the items it attends to), its share of the "
                                          "history, its most attended items, and the recommendations it brings. "
                                          "Titles come from --items ITEMS_CSV alone, or from MovieLens (--data DIR "
                                          "or --dataset); otherwise ids are shown.")
    p.add_argument("model_path", help="retrieval export: BASE/retrieval (newest version) or a version directory")
    p.add_argument("--history", nargs="+", required=True, metavar="ID",
                   help="history item ids, oldest first (space- or comma-separated)")
    p.add_argument("-k", type=int, default=10, help="recommendations listed in all (default 10)")
    p.add_argument("--json", action="store_true")
    add_data_args(p)
    p.set_defaults(func=run, dataset=None)


def interests(model_path: str, history: list, k: int = 10) -> dict:
    """The export's answer: ``{"interests": [{label, weight, genres, words, top_items,
    recommendations: [(id, score)]}]}`` (interests by weight, largest first; empty for a
    one-vector model) and, with an interest profile, ``"profile": {"next_items": [(genre,
    share)] (the predicted top 3 of the next 10 items), "history": [(genre, share)] (the
    history's own top 3)}``."""
    import tensorflow as tf

    from tfrec_attn.evaluation.saved_model import resolve_saved_model

    try:
        path = resolve_saved_model(model_path)
    except FileNotFoundError as error:
        raise CLIError(f"{error}; give a retrieval export (BASE/retrieval or one of its version directories)") from None
    loaded = tf.saved_model.load(path)
    if "interests" not in loaded.signatures and "profile" not in loaded.signatures:
        raise CLIError(f"{path}: this export has no `interests` signature (one vector per user) and no interest "
                       "profile; train with --set model.user_tower.interests=4 (and/or "
                       "model.user_tower.profile=true) and export again")
    request = tf.constant([history or [""]])
    answer = {"interests": []}
    if "profile" in loaded.signatures:
        out = {name: value.numpy()[0] for name, value in loaded.signatures["profile"](history=request).items()}
        names = [g.decode() for g in out["genre_names"]]
        answer["profile"] = {
            "next_items": [(g.decode(), float(share)) for g, share in zip(out["top_genres"], out["top_shares"])],
            "history": sorted(zip(names, map(float, out["history_genres"])), key=lambda p: -p[1])[:3]}
    if "interests" not in loaded.signatures:
        return answer
    described = {name: value.numpy()[0] for name, value in loaded.signatures["interests"](history=request).items()}
    served = loaded.signatures["serving_default"](history=request)
    ids = [x.decode() for x in served["item_ids"].numpy()[0]]
    scores, owner = served["scores"].numpy()[0], served["interest"].numpy()[0]
    found = [{"label": described["labels"][i].decode(), "weight": float(described["weights"][i]),
              "genres": [g.decode() for g in described["genres"][i] if g],
              "words": [w.decode() for w in described["words"][i] if w],
              "top_items": [t.decode() for t in described["top_items"][i] if t],
              "recommendations": []} for i in range(len(described["weights"]))]
    for item, score, i in list(zip(ids, scores, owner))[:k]:
        if item and score > float("-inf"):
            found[i]["recommendations"].append((item, float(score)))
    answer["interests"] = sorted(found, key=lambda f: -f["weight"])
    return answer


def run(args) -> int:
    history = [i.strip() for value in args.history for i in value.split(",") if i.strip()]
    if args.k < 1:
        raise CLIError(f"-k {args.k}: must be >= 1")
    answer = interests(args.model_path, history, args.k)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    names = titles(args)

    def name(item):
        return names.get(item, item)

    if "profile" in answer:
        def shares(pairs):
            return ", ".join(f"{genre} {share:.0%}" for genre, share in pairs if share > 0)

        print(f"next 10 items, predicted: {shares(answer['profile']['next_items'])}  "
              f"(the history: {shares(answer['profile']['history'])})")
    for number, interest in enumerate(answer["interests"], start=1):
        label = interest["label"] or "(no genres or words to describe it)"
        print(f"interest {number}: {label}  ({interest['weight']:.0%} of the history)")
        if interest["top_items"]:
            print("  from: " + "; ".join(name(i) for i in interest["top_items"]))
        for item, score in interest["recommendations"]:
            print(f"    {name(item):<50.50} {score:8.3f}")
        if not interest["recommendations"]:
            print(f"    (none of the top {args.k})")
    return 0
