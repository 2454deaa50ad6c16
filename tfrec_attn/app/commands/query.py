"""``tfrec-attn query``: ask a running server for recommendations (or its signatures), with
notes on what the answer means (a capped K, history ids the model does not know); or, with
``--user`` and ``--items``, a ``rating`` model for one user's ratings of some items."""

from __future__ import annotations

import json
import sys

from tfrec_attn.app.commands.common import CLIError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("query", help="ask a running server for recommendations")
    p.add_argument("--server", default="127.0.0.1:8500")
    p.add_argument("--model_name", default="retrieval")
    p.add_argument("--history", help="comma-separated item ids, oldest first")
    p.add_argument("--ratings", help="comma-separated ratings of the --history items, in their order "
                                     "(a model that reads them: rating-aware retrieval, recommend)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--metadata", action="store_true", help="print the model's signatures instead")
    p.add_argument("--user", help="a user id: ask a rating model (--model_name rating) for --items' ratings")
    p.add_argument("--items", help="with --user: comma-separated item ids to rate")
    p.set_defaults(func=run)


def rate(client, user: str, items: str | None) -> int:
    """Prints a rating model's rating of each item for ``user``, and a note when the model has no
    training rating of the user (each item's mean over every user is then its answer)."""
    ids = [i.strip() for i in (items or "").split(",") if i.strip()]
    if not ids:
        raise CLIError("--user needs --items: the comma-separated item ids to rate")
    answer = client.ratings(user, ids)
    for item, rating in zip(ids, answer.ratings):
        print(f"{item:<12} {rating:6.3f}")
    if not answer.known_user:
        print(f"note: user {user!r} has no training rating in the model: each item's rating is its mean over "
              "every user", file=sys.stderr)
    return 0


def run(args) -> int:
    from tfrec_attn.serving.client import RecommenderClient, ServingError

    if args.k < 1:
        raise CLIError(f"-k {args.k}: must be >= 1")
    history = [h.strip() for h in args.history.split(",") if h.strip()] if args.history else []
    ratings = None
    if args.ratings is not None:
        ratings = [r.strip() for r in args.ratings.split(",")]
        if len(ratings) != len(history):
            raise CLIError(f"--ratings: {len(ratings)} values for {len(history)} --history items")
        try:
            ratings = [float(r) if r else 0.0 for r in ratings]
        except ValueError:
            raise CLIError(f"--ratings: {args.ratings!r} is not a comma-separated list of numbers") from None
    with RecommenderClient(args.server, model_name=args.model_name, timeout=args.timeout) as client:
        if args.metadata:
            print(json.dumps(client.metadata(), indent=2))
            return 0
        if args.user is not None:
            return rate(client, args.user, args.items)
        try:
            ranked = client.recommend(history, k=args.k, ratings=ratings)
        except ValueError as error:  # ratings sent to a model that reads none
            raise CLIError(f"--ratings: {error}") from None
        for rank, (item, score) in enumerate(ranked, start=1):
            print(f"{rank:>3}  {item:<12} {score:9.4f}")
        notes = []
        if len(ranked) < args.k:
            # The export's K is the static width of serving_default's outputs.
            try:
                shape = client.metadata()["signatures"]["serving_default"]["outputs"]["item_ids"]["shape"]
                export_k = shape[1] if len(shape) == 2 and shape[1] > 0 else None
            except (ServingError, KeyError):
                export_k = None
            if export_k is not None and args.k > export_k:
                notes.append(f"-k {args.k}: the model returns at most {export_k} items (the export's K), so "
                             f"{len(ranked)} are listed; for more, export with a larger K: `tfrec-attn export "
                             f"RUN_DIR --k {args.k}` or train with --set export.k={args.k}")
            else:
                notes.append(f"-k {args.k}: the model returned {len(ranked)} items (it never returns the "
                             "history's items, nor more items than its catalogue holds)")
        # Which history ids does the model know? The `rank` signature scores unknown ids -inf.
        unknown = []
        if history:
            try:
                unknown = [item for item, score in client.rank(history, history) if score == float("-inf")]
            except ServingError as error:
                notes.append(f"could not check the history ids against the model ({error})")
        zeros = bool(ranked) and all(score == 0.0 for _, score in ranked)
        answer = ("every item scores 0 (the user vector is zero), so the list is the first items of the "
                  "model's vocabulary in its order, not a recommendation" if zeros else
                  "the scores are the model's per-item bias alone (model.item_bias), nothing about this user")
        if history and unknown and len(set(unknown)) == len(set(history)):
            notes.append(f"none of the history ids ({', '.join(dict.fromkeys(unknown))}) is known to the model, "
                         f"so this is its answer for an empty history: {answer}")
        elif unknown:
            notes.append(f"{len(set(unknown))} of {len(set(history))} history ids are unknown to the model and were "
                         f"ignored: {', '.join(dict.fromkeys(unknown))}")
        elif not history:
            notes.append(f"no --history: this is the model's answer for an empty history: {answer}")
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    return 0
