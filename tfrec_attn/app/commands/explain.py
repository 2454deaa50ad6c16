"""``tfrec-attn explain``: a ranking export's scores for candidates after a history, and
each candidate's attention over the history (:class:`tfrec_attn.app.explain.RankingExplainer`)."""

from __future__ import annotations

import json
import os
import sys

from tfrec_attn.app.commands.common import CLIError, add_data_args, titles


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("explain", help="score candidates with a ranking export and show each one's attention "
                                              "over the history",
                              description="Scores CANDIDATES after HISTORY with a ranking export (serving_default) "
                                          "and lists, for each candidate, the history items by |attention weight| "
                                          "(the export's `explain` signature; DIN weights may be negative). Titles "
                                          "come from --items ITEMS_CSV alone, or from MovieLens (--data DIR or "
                                          "--dataset); otherwise ids are shown.")
    p.add_argument("model_path", help="ranking export: BASE/ranking (newest version), a version directory, or BASE")
    p.add_argument("--history", nargs="+", default=[], metavar="ID",
                   help="history item ids, oldest first (space- or comma-separated)")
    p.add_argument("--candidates", nargs="+", required=True, metavar="ID",
                   help="item ids to score and explain (space- or comma-separated)")
    p.add_argument("--top", type=int, default=5, help="history items listed per candidate (default 5)")
    p.add_argument("--heatmap", metavar="PNG", help="also write candidates x history items as a heatmap")
    p.add_argument("--json", action="store_true")
    add_data_args(p)
    p.set_defaults(func=run, dataset=None)


def run(args) -> int:
    from tfrec_attn.app.explain import RankingExplainer

    history = [i.strip() for value in args.history for i in value.split(",") if i.strip()]
    candidates = [i.strip() for value in args.candidates for i in value.split(",") if i.strip()]
    if not candidates:
        raise CLIError("--candidates: no item ids given; list at least one candidate to score")
    if args.top is not None and args.top < 1:
        raise CLIError(f"--top {args.top}: must be >= 1")
    if args.heatmap and not os.path.isdir(os.path.dirname(os.path.abspath(args.heatmap))):
        raise CLIError(f"--heatmap {args.heatmap}: directory {os.path.dirname(os.path.abspath(args.heatmap))} "
                       "does not exist")
    try:
        explainer = RankingExplainer(args.model_path)
    except FileNotFoundError as error:
        raise CLIError(f"{error}; give a ranking export (BASE/ranking or one of its version directories)") from None
    result = explainer.explain(history, candidates, titles=titles(args))
    if args.json:
        print(json.dumps(result.to_dict(top=args.top), indent=2))
    else:
        print(result.table(top=args.top))
    if args.heatmap:
        result.heatmap(args.heatmap)
        print(f"heatmap written to {args.heatmap}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
