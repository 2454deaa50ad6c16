"""In-graph BERT packing (tfrec_attn.text.tokenization) against ids worked out by hand over a
tiny vocabulary: [CLS]/[SEP], truncation to max_tokens, [PAD] to the longest text."""

import pytest
import tensorflow as tf

# Row = id. [PAD] is not 0 here, so padding shows that the vocabulary's [PAD] id is used.
VOCAB = ["[UNK]", "[PAD]", "[CLS]", "[SEP]", "the", "red", "cat", "##s", ".", "cafe"]
UNK, PAD, CLS, SEP, THE, RED, CAT, S, DOT, CAFE = range(len(VOCAB))


@pytest.fixture()
def vocab_path(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return str(path)


def _tokenize(vocab_path, texts, max_tokens):
    from tfrec_attn.text.tokenization import BertTokenization

    out = BertTokenization(vocab_path, lower_case=True, max_tokens=max_tokens)(tf.constant(texts))
    return {name: value.numpy().tolist() for name, value in out.items()}


def test_packs_cls_text_sep_truncates_to_max_tokens_and_pads(vocab_path):
    # "The red cats." -> the red cat ##s . (5 tokens), cut to 6 - 2 = 4; "CAFÉ dog" ->
    # cafe [UNK] (lower-cased, accent stripped, unknown word); "" -> [CLS] [SEP].
    out = _tokenize(vocab_path, ["The red cats.", "", "CAFÉ dog"], max_tokens=6)
    assert out["input_ids"] == [
        [CLS, THE, RED, CAT, S, SEP],
        [CLS, SEP, PAD, PAD, PAD, PAD],
        [CLS, CAFE, UNK, SEP, PAD, PAD],
    ]
    assert out["attention_mask"] == [[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    assert out["token_type_ids"] == [[0] * 6] * 3


def test_pads_to_the_longest_text_of_the_batch_not_max_tokens(vocab_path):
    out = _tokenize(vocab_path, ["the cat", "red", "the red cats."], max_tokens=64)
    assert out["input_ids"] == [
        [CLS, THE, CAT, SEP, PAD, PAD, PAD],
        [CLS, RED, SEP, PAD, PAD, PAD, PAD],
        [CLS, THE, RED, CAT, S, DOT, SEP],
    ]
    assert out["attention_mask"] == [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0], [1] * 7]


def test_same_ids_in_a_graph_and_after_a_config_round_trip(vocab_path):
    from tfrec_attn.text.tokenization import BertTokenization

    layer = BertTokenization(vocab_path, max_tokens=5)
    clone = BertTokenization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    fn = tf.function(clone, input_signature=[tf.TensorSpec([None], tf.string)])
    texts = tf.constant(["red cats", "the"])
    assert fn(texts)["input_ids"].numpy().tolist() == [[CLS, RED, CAT, S, SEP], [CLS, THE, SEP, PAD, PAD]]
    assert fn(texts)["input_ids"].numpy().tolist() == layer(texts)["input_ids"].numpy().tolist()


def test_bad_vocabulary_and_max_tokens_say_what_is_wrong(vocab_path, tmp_path):
    from tfrec_attn.text import PretrainedModelError
    from tfrec_attn.text.tokenization import BertTokenization

    with pytest.raises(ValueError, match="max_tokens must be >= 3.*got 2"):
        BertTokenization(vocab_path, max_tokens=2)
    bad = tmp_path / "words.txt"
    bad.write_text("[UNK]\n[CLS]\nthe\n", encoding="utf-8")
    with pytest.raises(PretrainedModelError, match=r"words.txt: no \[PAD\], \[SEP\] token"):
        BertTokenization(str(bad))
