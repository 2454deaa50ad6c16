import json
import os
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from tfrec_attn.data import leave_one_out
from tfrec_attn.data.sequences import sequence_dataset, sequence_source, training_examples
from tfrec_attn.data.synthetic import planted_sequences
from tfrec_attn.data.tfrecord import (
    load_vocabulary,
    read_sequence_files,
    shard_files,
    write_sequence_files,
)
from tfrec_attn.features.vocab import ItemVocabulary


@pytest.fixture(scope="module")
def split():
    # min_len=2: some users have fewer than 3 interactions and train on all of them,
    # some have 2 items of training data, none is empty; lengths up to 30 > max_len below.
    return leave_one_out(planted_sequences(num_items=40, num_users=60, min_len=2, max_len=30,
                                           seed=3).interactions)


def in_memory(split, include_validation=False):
    sequences = [split.item_vocab[s] for s in split.train_sequences(include_validation)]
    return sequences, split.train_part("timestamps", include_validation)


def elements(ds):
    """A dataset of ``(ids,)`` / ``(ids, times)`` as a Counter of hashable tuples."""
    return Counter(tuple(tuple(column.numpy().tolist()) for column in element) for element in ds)


def user_ids(files):
    feature = {"user_id": tf.io.FixedLenFeature([], tf.string)}
    return [tf.io.parse_single_example(r, feature)["user_id"].numpy().decode()
            for r in tf.data.TFRecordDataset(files)]


def test_round_trip_matches_the_in_memory_source(split, tmp_path):
    manifest = write_sequence_files(split, str(tmp_path / "train"), num_shards=4)
    sequences, times = in_memory(split)
    kept = [s for s in sequences if len(s) >= 2]
    assert manifest["num_users"] == len(kept) == sum(s["users"] for s in manifest["shards"])
    assert manifest["num_interactions"] == sum(len(s) for s in kept)
    assert [s["file"] for s in manifest["shards"]] == [
        f"sequences-0000{k}-of-00004.tfrecord" for k in range(4)]
    assert json.loads((tmp_path / "train" / "manifest.json").read_text()) == manifest
    assert not [f for f in os.listdir(tmp_path / "train") if ".tmp" in f]

    for with_times in (False, True):
        expected = sequence_source(sequences, times if with_times else None)
        got = read_sequence_files(str(tmp_path / "train"), with_timestamps=with_times)
        assert got.element_spec == expected.element_spec
        assert elements(got) == elements(expected)
    options = read_sequence_files(str(tmp_path / "train")).options()
    assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.FILE
    assert list(load_vocabulary(str(tmp_path / "train")).item_ids) == list(split.item_vocab)

    # The refit's variant (train + validation) goes to a directory of its own.
    refit = write_sequence_files(split, str(tmp_path / "refit"), num_shards=4, include_validation=True)
    assert refit["include_validation"] and refit["num_interactions"] == (
        manifest["num_interactions"] + len(split.evaluated))
    sequences, times = in_memory(split, include_validation=True)
    assert elements(read_sequence_files(str(tmp_path / "refit"), with_timestamps=True)) == elements(
        sequence_source(sequences, times))


def test_file_sharding_gives_each_pipeline_its_own_files(split, tmp_path):
    path = str(tmp_path / "train")
    write_sequence_files(split, path, num_shards=5)
    contexts = [tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=k) for k in range(2)]
    files = [shard_files(path, c) for c in contexts]
    assert [len(f) for f in files] == [3, 2]
    assert not set(files[0]) & set(files[1])
    assert sorted(files[0] + files[1]) == shard_files(path)
    users = [user_ids(f) for f in files]
    assert not set(users[0]) & set(users[1])
    sequences, _ = in_memory(split)
    everyone = {str(split.user_ids[u]) for u, s in enumerate(sequences) if len(s) >= 2}
    assert set(users[0]) | set(users[1]) == everyone
    # What each pipeline reads is what its files hold, and together they read everything once.
    parts = [elements(read_sequence_files(path, input_context=c)) for c in contexts]
    assert [sum(p.values()) for p in parts] == [len(u) for u in users]
    assert parts[0] + parts[1] == elements(sequence_source(sequences))
    write_sequence_files(split, str(tmp_path / "two"), num_shards=2)
    with pytest.raises(ValueError, match="2 shard file\\(s\\) for 3 input pipelines"):
        read_sequence_files(str(tmp_path / "two"), input_context=tf.distribute.InputContext(3, 0))


def test_training_examples_from_files_equal_the_in_memory_ones(split, tmp_path):
    path = str(tmp_path / "train")
    write_sequence_files(split, path, num_shards=3)
    sequences, _ = in_memory(split)
    options = dict(max_len=12, batch_size=16, shuffle=False, bucket_by_length=False)

    def rows(ds):
        out = []
        for features, labels in ds:
            for h, y in zip(features["history"].numpy(), labels.numpy()):
                out.append((tuple(h[h > 0]), tuple(y[y > 0])))  # unpadded: batches differ in width
        return sorted(out)

    from_files = rows(training_examples(read_sequence_files(path), load_vocabulary(path), **options))
    expected = rows(sequence_dataset(sequences, ItemVocabulary(split.item_vocab), **options))
    assert len(expected) == sum(len(s) >= 2 for s in sequences)
    assert from_files == expected
    # shuffle_ties needs the timestamps, which the files carry.
    ties = training_examples(read_sequence_files(path, with_timestamps=True), load_vocabulary(path),
                             shuffle_ties=True, **options)
    assert len(rows(ties)) == len(expected)


def test_cli_data_prepare_writes_the_files(tmp_path, capsys):
    from tfrec_attn.app.cli import main

    data = planted_sequences(num_items=30, num_users=40, seed=1).interactions
    csv = tmp_path / "events.csv"
    with open(csv, "w") as handle:
        handle.write("user_id,item_id,timestamp\n")
        for u, i, t in zip(data.user_ids, data.item_ids, data.timestamps):
            handle.write(f"{u},{i},{t}\n")
    out = tmp_path / "files"
    assert main(["data", "prepare", "--interactions", str(csv), "--output", str(out), "--shards", "3"]) == 0
    manifest = json.loads((out / "train" / "manifest.json").read_text())
    assert manifest["num_shards"] == 3 and not manifest["include_validation"]
    assert manifest["num_users"] == 40
    assert manifest["num_interactions"] == len(data) - 2 * 40  # every user has >= 5: 2 held out
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == (f"wrote 40 users, {manifest['num_interactions']:,} train interactions in 3 shards "
                          f"to {out / 'train'}")
    assert printed[-1] == f"train from them with --set data.sequence_files={out}"
    refit = json.loads((out / "train_validation" / "manifest.json").read_text())
    assert refit["include_validation"] and refit["num_shards"] == 3
    assert refit["num_interactions"] == len(data) - 40


def test_missing_files_give_clear_errors(split, tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such directory"):
        read_sequence_files(missing)
    path = tmp_path / "train"
    write_sequence_files(split, str(path), num_shards=2)
    (path / "sequences-00001-of-00002.tfrecord").unlink()
    with pytest.raises(FileNotFoundError, match="sequences-00001-of-00002.tfrecord: shard listed in"):
        read_sequence_files(str(path))
    (path / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json: missing"):
        read_sequence_files(str(path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="items.txt: missing"):
        load_vocabulary(str(empty))
    np.testing.assert_equal(load_vocabulary(str(path)).item_ids, split.item_vocab)
