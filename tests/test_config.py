import pytest

from tfrec_attn.training.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_default_config_loads(tmp_path):
    import os

    config = load_config(os.path.join(os.path.dirname(__file__), "..", "training", "configs",
                                      "ml100k_retrieval.yaml"))
    assert config.model.max_len == 200 and config.export.k == 100


def test_errors_name_file_line_and_field(tmp_path):
    path = write(tmp_path, "seed: 1\nmodel:\n  embedding_dim: 64\n  num_heads: 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: model.num_heads=3 must divide model.embedding_dim=64$"):
        load_config(path)
    path = write(tmp_path, "model:\n  dropuot: 0.1\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: unknown key 'model.dropuot'; did you mean 'dropout'\?"):
        load_config(path)
    path = write(tmp_path, "train:\n  batch_size: lots\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: train.batch_size='lots' must be of type int"):
        load_config(path)


def test_overrides_and_their_errors(tmp_path):
    path = write(tmp_path, "model:\n  dropout: 0.5\n")
    config = load_config(path, ["model.dropout=0.25", "loss.type=in_batch", "train.jit_compile=true"])
    assert config.model.dropout == 0.25 and config.loss.type == "in_batch" and config.train.jit_compile
    with pytest.raises(ConfigError, match=r"^--set loss.type=softmax: loss.type='softmax' must be one of"):
        load_config(path, ["loss.type=softmax"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["model.dropout"])
