"""``tfrec-attn index add-items``: the next version of an export with new items, embedded
from their text (:func:`tfrec_attn.export.catalogue.add_items`)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    index = subparsers.add_parser("index", help="change an exported model's item index without retraining")
    index_sub = index.add_subparsers(dest="index_command", required=True)
    p = index_sub.add_parser("add-items", help="publish the next version of an export with new items, embedded "
                                               "from their text (cold start; text/hybrid item towers)")
    p.add_argument("export_base", help="the export base path, e.g. runs/main/export")
    p.add_argument("--items", required=True,
                   help="CSV with item_id,title[,text][,genres] (header required); ids must be new")
    p.add_argument("--model-name", default="retrieval", help="model directory under EXPORT_BASE (default retrieval)")
    p.set_defaults(func=add_items)


def add_items(args) -> int:
    import time

    from tfrec_attn.data.csv_reader import read_items_csv
    from tfrec_attn.export.catalogue import add_items as publish

    start = time.perf_counter()
    items = read_items_csv(args.items)
    path = publish(args.export_base, items, model_name=args.model_name)
    print(f"{path}: {len(items)} new items indexed in {time.perf_counter() - start:.1f} s "
          "(a running server picks the version up when it polls)")
    return 0
