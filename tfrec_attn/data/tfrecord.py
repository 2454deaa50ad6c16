"""Training sequences as sharded TFRecord files, for data beyond one machine's memory.

:func:`write_sequence_files` writes the training part of a
:class:`~tfrec_attn.data.splits.LeaveOneOutSplit` once; :func:`read_sequence_files`
streams it back as the same elements as the in-memory
:func:`~tfrec_attn.data.sequences.sequence_source` (``(ids,)`` or ``(ids, timestamps)``
per user), so it feeds :func:`~tfrec_attn.data.sequences.training_examples` unchanged.
Under ``tf.distribute`` each input pipeline opens only its own shard files (FILE
sharding), so no worker reads, or holds, the whole data set.

Layout of a directory::

    sequences-00000-of-00008.tfrecord   one tf.train.Example per user (round-robin over shards):
    ...                                   user_id    bytes
    sequences-00007-of-00008.tfrecord     item_ids   bytes list, raw ids, oldest first
                                          timestamps int64 list, aligned with item_ids
    vocab/items.txt                     the catalogue (ItemVocabulary.save)
    manifest.json                       shard names and counts, written last

Users with fewer than 2 training items (nothing to predict) are not written. A write
goes to temporary names first and renames them when complete; the manifest is written
last, so a directory with a manifest holds a complete set of files.
"""

from __future__ import annotations

import json
import os

from tfrec_attn.data.errors import DataFormatError
from tfrec_attn.features.vocab import ItemVocabulary

FORMAT = "tfrec_attn.sequences"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VOCABULARY = os.path.join("vocab", "items.txt")
_PARSE_BATCH = 256  # records parsed per call


def shard_name(index: int, num_shards: int) -> str:
    return f"sequences-{index:05d}-of-{num_shards:05d}.tfrecord"


def _replace_atomically(path: str, write) -> None:
    """Calls ``write(temporary_path)`` and renames the result to ``path``."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_sequence_files(split, output_dir: str, *, num_shards: int = 8,
                         include_validation: bool = False) -> dict:
    """Writes the training sequences of ``split`` as ``num_shards`` TFRecord files.

    Args:
        split: LeaveOneOutSplit.
        output_dir: str. Directory to write (created; files of an earlier write are
            replaced). Write the ``include_validation=True`` variant (for the refit on
            train + validation) into a directory of its own.
        num_shards: int. Number of files; at least the number of input pipelines that
            will read them (each pipeline reads whole files).
        include_validation: bool. Also write each evaluated user's validation target
            (as ``split.train_sequences(include_validation=True)``).

    Returns:
        dict. The manifest (also written to ``output_dir/manifest.json``).
    """
    import tensorflow as tf

    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    os.makedirs(output_dir, exist_ok=True)
    manifest_path = os.path.join(output_dir, MANIFEST)
    if os.path.exists(manifest_path):  # from here on the directory is incomplete until rewritten
        os.remove(manifest_path)

    sequences = split.train_sequences(include_validation)
    timestamps = split.train_part("timestamps", include_validation)
    names = [shard_name(k, num_shards) for k in range(num_shards)]
    paths = [os.path.join(output_dir, name) for name in names]
    temporary = [f"{path}.tmp-{os.getpid()}" for path in paths]
    users = [0] * num_shards
    interactions = [0] * num_shards
    writers = [tf.io.TFRecordWriter(t) for t in temporary]
    try:
        kept = 0
        for user, (seq, times) in enumerate(zip(sequences, timestamps)):
            if len(seq) < 2:
                continue
            shard = kept % num_shards  # round-robin: shards differ by at most one user
            kept += 1
            example = tf.train.Example(features=tf.train.Features(feature={
                "user_id": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[str(split.user_ids[user]).encode()])),
                "item_ids": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[str(i).encode() for i in split.item_vocab[seq]])),
                "timestamps": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(t) for t in times])),
            }))
            writers[shard].write(example.SerializeToString())
            users[shard] += 1
            interactions[shard] += len(seq)
        for writer in writers:
            writer.close()
        for t, path in zip(temporary, paths):
            os.replace(t, path)
    finally:
        for writer, t in zip(writers, temporary):
            writer.close()
            if os.path.exists(t):
                os.remove(t)

    vocabulary_path = os.path.join(output_dir, VOCABULARY)
    os.makedirs(os.path.dirname(vocabulary_path), exist_ok=True)
    _replace_atomically(vocabulary_path, ItemVocabulary(split.item_vocab[split.training_items()]).save)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "include_validation": bool(include_validation),
        "min_interactions": getattr(split, "min_interactions", None),
        "num_shards": num_shards,
        "num_users": sum(users),
        "num_interactions": sum(interactions),
        "num_items": int(split.num_items),
        "vocabulary": VOCABULARY,
        "shards": [{"file": name, "users": u, "interactions": n}
                   for name, u, n in zip(names, users, interactions)],
    }

    def dump(path):
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2)
            handle.write("\n")

    _replace_atomically(manifest_path, dump)
    return manifest


def read_manifest(path: str) -> dict:
    """The manifest of a directory written by :func:`write_sequence_files`."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory of sequence files "
                                "(write one with `tfrec-attn data prepare --output DIR`)")
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise FileNotFoundError(f"{manifest_path}: missing; {path} is not a complete directory of "
                                "sequence files (an interrupted write?)")
    with open(manifest_path, encoding="utf-8") as handle:
        try:
            manifest = json.load(handle)
        except json.JSONDecodeError as error:
            raise DataFormatError(manifest_path, error.lineno, "manifest", "invalid JSON") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataFormatError(manifest_path, 1, "format", f"expected {FORMAT!r}",
                              manifest.get("format") if isinstance(manifest, dict) else manifest)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataFormatError(manifest_path, 1, "format_version",
                              f"this version of tfrec_attn reads version {FORMAT_VERSION}",
                              manifest.get("format_version"))
    return manifest


def shard_files(path: str, input_context=None) -> list[str]:
    """Paths of the shard files that this input pipeline reads.

    With ``input_context.num_input_pipelines > 1`` pipeline ``p`` keeps the shards
    ``i % num_input_pipelines == p``: pipelines read disjoint sets of whole files.
    """
    files = [os.path.join(path, shard["file"]) for shard in read_manifest(path)["shards"]]
    for file in files:
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{file}: shard listed in {os.path.join(path, MANIFEST)} is missing")
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipelines = input_context.num_input_pipelines
        if len(files) < pipelines:
            raise ValueError(f"{path} has {len(files)} shard file(s) for {pipelines} input pipelines: "
                             f"every pipeline needs at least one (rewrite with --shards >= {pipelines})")
        files = files[input_context.input_pipeline_id::pipelines]
    return files


def read_sequence_files(path: str, *, input_context=None, with_timestamps: bool = False,
                        num_parallel_reads: int | None = -1):
    """Streams the sequences of a directory written by :func:`write_sequence_files`.

    Args:
        path: str. The directory (its manifest lists the shards).
        input_context: tf.distribute.InputContext or None. Reads only this input
            pipeline's shard files (see :func:`shard_files`).
        with_timestamps: bool. Also yield the timestamps (for ``shuffle_ties``).
        num_parallel_reads: int. Files read concurrently (default -1 = ``tf.data.AUTOTUNE``;
            None reads them one after the other).

    Returns:
        tf.data.Dataset of ``(ids,)`` or ``(ids, timestamps)`` per user, exactly as
        :func:`~tfrec_attn.data.sequences.sequence_source`: ``ids`` tf.string [n], oldest
        first; ``timestamps`` tf.float64 [n]. Its ``auto_shard_policy`` is FILE.
    """
    import tensorflow as tf

    files = shard_files(path, input_context)
    features = {"item_ids": tf.io.RaggedFeature(tf.string, row_splits_dtype=tf.int64)}
    if with_timestamps:
        features["timestamps"] = tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64)

    def parse(records):
        parsed = tf.io.parse_example(records, features)  # RaggedTensors [batch, None]
        if with_timestamps:
            return parsed["item_ids"], tf.cast(parsed["timestamps"], tf.float64)
        return (parsed["item_ids"],)

    ds = tf.data.TFRecordDataset(files, num_parallel_reads=num_parallel_reads)
    # Parsing a batch of records at once is cheaper than one by one; unbatching the
    # ragged result gives the element spec of ``sequence_source`` exactly (ragged_rank 0),
    # so file and in-memory sources can also be mixed (concatenate, sample_from_datasets).
    ds = ds.batch(_PARSE_BATCH).map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    return ds.with_options(options)


def load_vocabulary(path: str) -> ItemVocabulary:
    """The item vocabulary stored with the sequence files of directory ``path``."""
    file = os.path.join(path, VOCABULARY)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: missing; {path} is not a directory of sequence files")
    return ItemVocabulary.load(file)
