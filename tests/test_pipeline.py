import numpy as np
import pytest
import tensorflow as tf

from tfrec_attn.data.sequences import history_batch, length_buckets, sequence_dataset
from tfrec_attn.features.vocab import ItemVocabulary


def test_vocabulary_round_trip_and_oov(tmp_path):
    vocab = ItemVocabulary(["50", "172", "x y"])
    path = vocab.save(str(tmp_path / "vocab" / "items.txt"))
    again = ItemVocabulary.load(path)
    assert list(again.item_ids) == ["50", "172", "x y"]
    lookup = again.lookup_layer()
    ids = lookup(tf.constant([["172", "", "nope", "x y"]])).numpy()
    assert ids.tolist() == [[3, 0, 1, 4]]  # item index = catalogue index + 2; "" = 0; OOV = 1
    inverse = again.lookup_layer(invert=True)
    assert inverse(tf.constant([2, 3])).numpy().tolist() == [b"50", b"172"]
    assert again.num_indices == 5
    with pytest.raises(ValueError, match="position 1"):
        ItemVocabulary(["a", ""])
    with pytest.raises(ValueError, match="unique"):
        ItemVocabulary(["a", "a"])


def test_sequence_dataset_shifts_truncates_and_pads():
    vocab = ItemVocabulary([f"i{k}" for k in range(30)])
    seqs = [[f"i{k}" for k in range(10)], ["i5", "i6", "i7"], ["i9"], ["i1", "unseen"]]
    ds = sequence_dataset(seqs, vocab, max_len=4, batch_size=8, shuffle=False, bucket_by_length=False)
    batches = list(ds)
    assert len(batches) == 1
    features, labels = batches[0]
    history = features["history"].numpy()
    labels = labels.numpy()
    # The 1-item user has nothing to predict and is dropped; others keep the newest 4 positions.
    assert history.tolist() == [[7, 8, 9, 10], [7, 8, 0, 0], [3, 0, 0, 0]]
    assert labels.tolist() == [[8, 9, 10, 11], [8, 9, 0, 0], [1, 0, 0, 0]]  # unseen -> OOV (1)


def test_bucketing_pads_only_to_the_batch_longest():
    vocab = ItemVocabulary([str(k) for k in range(300)])
    rng = np.random.default_rng(0)
    seqs = [[str(v) for v in rng.integers(0, 300, size=n)] for n in [3] * 20 + [150] * 20]
    ds = sequence_dataset(seqs, vocab, max_len=100, batch_size=8, shuffle=True, seed=1)
    widths = sorted({int(x["history"].shape[1]) for x, _ in ds})
    assert widths == [2, 100]
    assert sum(int(y.shape[0]) for _, y in ds) == 40
    assert length_buckets(200) == [7, 13, 26, 51, 101]


def test_history_batch_is_right_padded():
    ids = np.array(["a", "b", "c"], dtype=object)
    batch = history_batch([[0, 1, 2], [2]], ids, max_len=2)
    assert batch.tolist() == [["b", "c"], ["c", ""]]


def test_future_window_labels():
    vocab = ItemVocabulary([f"i{k}" for k in range(30)])
    seqs = [[f"i{k}" for k in range(6)], ["i9", "i8", "i7"]]
    ds = sequence_dataset(seqs, vocab, max_len=3, batch_size=8, shuffle=False, bucket_by_length=False,
                          future_window=2)
    features, labels = next(iter(ds))
    # Sequence i0..i5 (indices 2..7): history = newest 3 of i0..i4 = i2, i3, i4.
    assert features["history"].numpy().tolist() == [[4, 5, 6], [11, 10, 0]]
    assert labels.numpy().tolist() == [[[5, 6], [6, 7], [7, 0]], [[10, 9], [9, 0], [0, 0]]]


def test_older_windows_make_every_interaction_a_target_once():
    vocab = ItemVocabulary([f"i{k}" for k in range(30)])
    seqs = [[f"i{k}" for k in range(8)], ["i20", "i21"]]  # indices 2..9 and 22, 23
    ds = sequence_dataset(seqs, vocab, max_len=3, batch_size=8, shuffle=False, bucket_by_length=False,
                          older_windows=True)
    features, labels = next(iter(ds))
    # 7 targets of the long user in windows of 3 from the newest: [7..9], [4..6], [3].
    assert features["history"].numpy().tolist() == [[6, 7, 8], [3, 4, 5], [2, 0, 0], [22, 0, 0]]
    assert labels.numpy().tolist() == [[7, 8, 9], [4, 5, 6], [3, 0, 0], [23, 0, 0]]
    targets = labels.numpy()[labels.numpy() > 0]
    assert sorted(targets.tolist()) == [3, 4, 5, 6, 7, 8, 9, 23]  # each once
    # Without the option only the newest window of the long user is trained on.
    plain = next(iter(sequence_dataset(seqs, vocab, max_len=3, batch_size=8, shuffle=False,
                                       bucket_by_length=False)))[1].numpy()
    assert plain.tolist() == [[7, 8, 9], [23, 0, 0]]


def test_shuffle_ties_reorders_only_within_equal_timestamps():
    vocab = ItemVocabulary([f"i{k}" for k in range(30)])
    seq = [f"i{k}" for k in range(8)]
    times = [1, 5, 5, 5, 5, 9, 9, 12]
    orders = set()
    for seed in range(12):
        ds = sequence_dataset([seq], vocab, max_len=10, batch_size=1, shuffle=False, bucket_by_length=False,
                              timestamps=[times], shuffle_ties=True, seed=seed)
        tf.random.set_seed(seed)
        features, labels = next(iter(ds))
        full = features["history"].numpy()[0].tolist() + [labels.numpy()[0][-1]]
        assert full[0] == 2 and full[-1] == 9  # the untied first and last items stay put
        assert sorted(full[1:5]) == [3, 4, 5, 6] and sorted(full[5:7]) == [7, 8]
        orders.add(tuple(full))
    assert len(orders) > 3  # ties really are re-drawn
    with pytest.raises(ValueError, match="needs the timestamps"):
        sequence_dataset([seq], vocab, max_len=10, batch_size=1, shuffle_ties=True)


def test_popularity_sequences_have_a_long_tail_and_the_planted_successor_rate():
    from tfrec_attn.data.synthetic import popularity_sequences

    data = popularity_sequences(num_items=5000, num_users=400, mean_len=30, follow=0.5, seed=3)
    again = popularity_sequences(num_items=5000, num_users=400, mean_len=30, follow=0.5, seed=3)
    inter = data.interactions
    assert list(inter.item_ids) == list(again.interactions.item_ids)  # deterministic per seed
    users, counts = np.unique(inter.user_ids, return_counts=True)
    assert len(users) == 400 and counts.min() >= 3
    assert len(data.items) == 5000
    items = np.array([int(i[1:]) for i in inter.item_ids])
    same_user = inter.user_ids[1:] == inter.user_ids[:-1]
    successor = (items[1:] == (items[:-1] + 1) % 5000)[same_user]
    assert 0.45 < successor.mean() < 0.56  # follow=0.5, plus rare accidental successors
    _, item_counts = np.unique(items, return_counts=True)
    top = np.sort(item_counts)[::-1]
    assert top[:50].sum() > 0.125 * top.sum()  # Zipf head: 1% of the items, > 1/8 of the draws
