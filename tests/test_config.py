import json

import pytest

from mistral_cl.config import ConfigError, ModelConfig
from mistral_cl.errors import InputError


def test_presets_have_the_documented_shapes():
    big = ModelConfig.preset("mistral-7b-v0.1")
    assert (big.n_layers, big.dim, big.n_heads, big.n_kv_heads, big.head_dim) == (32, 4096, 32, 8, 128)
    assert (big.hidden_dim, big.vocab_size, big.sliding_window, big.rope_theta) == (14336, 32000, 4096, 1e4)
    assert 7.0e9 < big.n_params < 7.3e9
    assert ModelConfig.preset("tiny").vocab_size == 32000


def test_hf_config_round_trips():
    cfg = ModelConfig.preset("tiny")
    assert ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg


def test_params_json_is_read(tmp_path):
    params = {"dim": 4096, "n_layers": 32, "head_dim": 128, "hidden_dim": 14336, "n_heads": 32,
              "n_kv_heads": 8, "norm_eps": 1e-05, "sliding_window": 4096, "vocab_size": 32000}
    (tmp_path / "params.json").write_text(json.dumps(params))
    assert ModelConfig.from_dir(tmp_path) == ModelConfig.preset("mistral-7b-v0.1")


@pytest.mark.parametrize(
    "change, message",
    [({"num_key_value_heads": 3}, "must divide n_heads"),
     ({"hidden_size": 102, "head_dim": None}, "does not divide hidden_size"),
     ({"hidden_act": "gelu"}, "hidden_act"),
     ({"num_hidden_layers": 0}, "positive integer")],
)
def test_inconsistent_hf_configs_are_rejected_with_a_reason(change, message):
    raw = ModelConfig.preset("tiny").to_hf_config() | change
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf_config(raw)


def test_unknown_params_json_fields_are_named(tmp_path):
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"dim": 64, "n_layers": 1, "n_heads": 4, "hidden_dim": 128,
                                "vocab_size": 10, "n_experts_typo": 3}))
    with pytest.raises(InputError, match="n_experts_typo"):
        ModelConfig.from_params_json(path)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="tiny"):
        ModelConfig.preset("mistral-70b")
