"""Reading, downloading and splitting interaction data."""

from __future__ import annotations

from tfrec_attn.data.csv_reader import read_csv_dataset
from tfrec_attn.data.dataset import Dataset, Interactions, Item, User
from tfrec_attn.data.download import download_movielens, locate_movielens
from tfrec_attn.data.errors import ChecksumError, DataFormatError, DataNotFoundError
from tfrec_attn.data.movielens import read_movielens
from tfrec_attn.data.rating_splits import (
    RatingSplit,
    grouplens_fold,
    leave_one_out_rating_split,
    random_rating_split,
)
from tfrec_attn.data.splits import LeaveOneOutSplit, leave_one_out

__all__ = [
    "ChecksumError", "DataFormatError", "DataNotFoundError", "Dataset", "Interactions", "Item",
    "LeaveOneOutSplit", "RatingSplit", "User", "download_movielens", "grouplens_fold", "leave_one_out",
    "leave_one_out_rating_split",
    "load_dataset", "locate_movielens", "random_rating_split", "read_csv_dataset", "read_movielens",
]


def load_dataset(data: str | None = None, *, dataset: str = "ml-100k", interactions: str | None = None,
                 items: str | None = None, on_bad_line: str = "error", download: bool = True,
                 url: str | None = None) -> Dataset:
    """The one entry point the CLI and training scripts use to get data.

    Args:
        data: str. A MovieLens directory; else ``TFREC_ATTN_DATA``, the cache, a download.
        dataset: str. MovieLens release to look for / download (``ml-100k``, ``ml-1m``, ...).
        interactions: str. A generic ``user_id,item_id,timestamp[,rating]`` CSV instead of MovieLens.
        items: str. Optional items CSV for ``interactions``.
        on_bad_line: str. ``error`` (default) or ``skip`` (skipped lines are counted in
            ``Dataset.skipped`` and reported by the CLI).
    """
    if interactions:
        return read_csv_dataset(interactions, items, on_bad_line=on_bad_line)
    directory = locate_movielens(data, dataset, download=download, url=url)
    return read_movielens(directory, on_bad_line=on_bad_line)
