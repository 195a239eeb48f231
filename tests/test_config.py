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


MINIMAL_HF = {"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 8,
              "intermediate_size": 128}


@pytest.mark.parametrize(("change", "named"), [
    ({"rope_scaling": {"type": "linear", "factor": 2.0}},
     "rope_scaling asks for RoPE scaling of type 'linear'"),
    ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "type 'dynamic'"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}},
     "rope_parameters asks for RoPE scaling of type 'yarn'"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
     "partial_rotary_factor=0.5"),
    ({"attention_bias": True}, "attention_bias"),
])
def test_settings_the_backbone_does_not_implement_are_refused_not_ignored(tmp_path, change, named):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(MINIMAL_HF | change))
    with pytest.raises(ConfigError) as error:
        ModelConfig.from_hf_config(path)
    assert str(path) in str(error.value) and named in str(error.value)


def test_plain_rope_parameters_are_read_as_transformers_reads_them():
    raw = MINIMAL_HF | {"rope_theta": 5.0, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}
    assert ModelConfig.from_hf_config(raw).rope_theta == 1e6


@pytest.mark.parametrize("model_type", ["mistral", "llama"])
@pytest.mark.parametrize("sliding_window", ["absent", None, 16])
def test_fields_a_config_leaves_out_take_transformers_defaults(model_type, sliding_window):
    import transformers

    raw = MINIMAL_HF | {"model_type": model_type}
    if sliding_window != "absent":
        raw["sliding_window"] = sliding_window
    ours = ModelConfig.from_hf_config(raw)
    reference = {"mistral": transformers.MistralConfig, "llama": transformers.LlamaConfig}[model_type]
    theirs = reference(**{k: v for k, v in raw.items() if k != "model_type"})
    assert ours.norm_eps == theirs.rms_norm_eps == 1e-6
    assert ours.n_kv_heads == theirs.num_key_value_heads
    assert ours.max_seq_len == theirs.max_position_embeddings
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]
    assert ours.sliding_window == getattr(theirs, "sliding_window", None) if model_type == "mistral" else (
        ours.sliding_window is None)
