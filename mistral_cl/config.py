"""Model configuration: the shapes of a Mistral backbone.

`ModelConfig` round-trips with Hugging Face `config.json` and reads Mistral's own `params.json`, so the
same weights directory works whichever way it was published.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mistral_cl.errors import InputError


class ConfigError(InputError):
    """A model configuration is unknown, incomplete or self-contradictory."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and constants of a Mistral-style decoder.

    `sliding_window=None` means full causal attention.
    """

    vocab_size: int = 32000
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 8
    head_dim: int = 128
    hidden_dim: int = 14336
    rope_theta: float = 10000.0
    sliding_window: int | None = 4096
    norm_eps: float = 1e-5
    max_seq_len: int = 32768

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                     "hidden_dim", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if problems:
            raise ConfigError("; ".join(problems))
        if self.n_heads % self.n_kv_heads:
            problems.append(
                f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads} (grouped-query attention)"
            )
        if self.head_dim % 2:
            problems.append(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.sliding_window is not None and self.sliding_window <= 0:
            problems.append(f"sliding_window must be positive or None, got {self.sliding_window}")
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            problems.append("rope_theta and norm_eps must be positive")
        if problems:
            raise ConfigError("; ".join(problems))

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        try:
            return PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None

    # ------------------------------------------------------------- Hugging Face
    @classmethod
    def from_hf_config(cls, config: dict[str, Any] | str | Path) -> ModelConfig:
        """Reads a Hugging Face `MistralConfig` (a dict or a path to `config.json`).

        A field the file leaves out takes transformers' default for its `model_type` (see
        `HF_DEFAULTS`), so the backbone computes what `transformers` would with the same file. Settings
        this backbone does not implement (RoPE scaling, partial rotary embeddings, biases) are refused
        rather than ignored.
        """
        raw, source = _load_json(config)
        known = {
            "vocab_size": "vocab_size",
            "hidden_size": "dim",
            "num_hidden_layers": "n_layers",
            "num_attention_heads": "n_heads",
            "num_key_value_heads": "n_kv_heads",
            "head_dim": "head_dim",
            "intermediate_size": "hidden_dim",
            "rms_norm_eps": "norm_eps",
            "max_position_embeddings": "max_seq_len",
        }
        model_type = raw.get("model_type", "mistral")
        if model_type not in HF_DEFAULTS:
            raise ConfigError(f"{source}: model_type {model_type!r} is not a Mistral/Llama decoder")
        act = raw.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act {act!r} is not supported (Mistral uses 'silu')")
        _refuse_unimplemented(raw, source)
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")
        missing = [k for k in required if k not in raw]
        if missing:
            raise ConfigError(f"{source}: missing fields {missing}")
        defaults = HF_DEFAULTS[model_type]
        kwargs = {ours: raw[theirs] for theirs, ours in known.items() if raw.get(theirs) is not None}
        for theirs, ours in known.items():
            if theirs not in raw and theirs in defaults:
                kwargs[ours] = defaults[theirs]
        kwargs.setdefault("n_kv_heads", raw["num_attention_heads"])  # given as null: one KV head per head
        if "head_dim" not in kwargs:
            if raw["hidden_size"] % raw["num_attention_heads"]:
                raise ConfigError(
                    f"{source}: num_attention_heads={raw['num_attention_heads']} does not divide "
                    f"hidden_size={raw['hidden_size']} and no head_dim is given"
                )
            kwargs["head_dim"] = raw["hidden_size"] // raw["num_attention_heads"]
        # Mistral reads sliding_window (absent: 4096, null: none); Llama has no sliding window at all.
        kwargs["sliding_window"] = (raw.get("sliding_window", defaults["sliding_window"])
                                    if model_type == "mistral" else None)
        kwargs["rope_theta"] = _rope_theta(raw)
        return _build(cls, kwargs, source)

    def to_hf_config(self) -> dict[str, Any]:
        """The `MistralConfig` fields for these shapes (for `transformers` or `config.json`)."""
        return {
            "model_type": "mistral",
            "architectures": ["MistralModel"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.hidden_dim,
            "rope_theta": self.rope_theta,
            "sliding_window": self.sliding_window,
            "rms_norm_eps": self.norm_eps,
            "max_position_embeddings": self.max_seq_len,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
        }

    # ---------------------------------------------------------------- Mistral
    @classmethod
    def from_params_json(cls, params: dict[str, Any] | str | Path) -> ModelConfig:
        """Reads Mistral's own `params.json` (as shipped beside `consolidated.safetensors`)."""
        raw, source = _load_json(params)
        known = {
            "dim": "dim",
            "n_layers": "n_layers",
            "n_heads": "n_heads",
            "n_kv_heads": "n_kv_heads",
            "head_dim": "head_dim",
            "hidden_dim": "hidden_dim",
            "rope_theta": "rope_theta",
            "sliding_window": "sliding_window",
            "norm_eps": "norm_eps",
            "vocab_size": "vocab_size",
        }
        ignored = {"max_batch_size", "max_seq_len", "moe", "lora", "model_type", "multiple_of",
                   "ffn_dim_multiplier", "use_biases"}
        unknown = sorted(set(raw) - set(known) - ignored)
        if unknown:
            raise ConfigError(f"{source}: unknown fields {unknown}")
        missing = [k for k in ("dim", "n_layers", "n_heads", "hidden_dim", "vocab_size") if k not in raw]
        if missing:
            raise ConfigError(f"{source}: missing fields {missing}")
        kwargs = {ours: raw[theirs] for theirs, ours in known.items() if theirs in raw}
        kwargs.setdefault("n_kv_heads", raw["n_heads"])
        if "head_dim" not in kwargs:
            if raw["dim"] % raw["n_heads"]:
                raise ConfigError(f"{source}: n_heads={raw['n_heads']} does not divide dim={raw['dim']}")
            kwargs["head_dim"] = raw["dim"] // raw["n_heads"]
        kwargs.setdefault("sliding_window", None)
        return _build(cls, kwargs, source)

    @classmethod
    def from_dir(cls, path: str | Path) -> ModelConfig:
        """Reads `config.json` (Hugging Face) or `params.json` (Mistral) from a weights directory."""
        path = Path(path)
        if (path / "config.json").exists():
            return cls.from_hf_config(path / "config.json")
        if (path / "params.json").exists():
            return cls.from_params_json(path / "params.json")
        from mistral_cl.pretrain import MODEL_DIR, pretraining_run

        if pretraining_run(path):
            raise ConfigError(f"{path}: a pretraining run, not weights",
                              hint=f"pass its model, {path / MODEL_DIR}")
        raise ConfigError(f"{path}: neither config.json nor params.json found",
                          hint="pass the directory of a Hugging Face or Mistral checkpoint, or "
                               "`pretrain`'s OUT/model")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise ConfigError(f"unknown ModelConfig fields {unknown}")
        return cls(**raw)

    @property
    def n_params(self) -> int:
        """Number of backbone parameters (embeddings, blocks, final norm; no LM head)."""
        attn = self.dim * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        mlp = 3 * self.dim * self.hidden_dim
        return self.vocab_size * self.dim + self.n_layers * (attn + mlp + 2 * self.dim) + self.dim


# transformers' defaults (MistralConfig, LlamaConfig) for the fields a config.json may leave out.
HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "mistral": {"num_key_value_heads": 8, "rms_norm_eps": 1e-6, "sliding_window": 4096,
                "max_position_embeddings": 4096 * 32, "rope_theta": 10000.0},
    "llama": {"rms_norm_eps": 1e-6, "sliding_window": None, "max_position_embeddings": 2048,
              "rope_theta": 10000.0},
}


def _rope_settings(raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The field that holds the RoPE settings and its value, as transformers reads them
    (`rope_scaling` first, then `rope_parameters`)."""
    for field in ("rope_scaling", "rope_parameters"):
        if raw.get(field):
            return field, raw[field]
    return "rope_parameters", {}


def _refuse_unimplemented(raw: dict[str, Any], source: str) -> None:
    """A ConfigError for settings the backbone would otherwise silently compute without."""
    hint = "use weights whose config.json has plain rotary embeddings and no biases (as Mistral-7B)"
    field, rope = _rope_settings(raw)
    if not isinstance(rope, dict) or any(isinstance(v, dict) for v in rope.values()):
        raise ConfigError(f"{source}: {field} {rope!r} is not supported (per-layer RoPE settings)", hint=hint)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ConfigError(f"{source}: {field} asks for RoPE scaling of type {kind!r}, which this backbone "
                          f"does not implement (it computes unscaled rotary embeddings)", hint=hint)
    partial = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ConfigError(f"{source}: partial_rotary_factor={partial} is not supported (every dimension "
                          f"of a head is rotated here)", hint=hint)
    biased = [name for name in ("attention_bias", "mlp_bias") if raw.get(name)]
    if biased:
        raise ConfigError(f"{source}: {' and '.join(biased)} are not supported (the backbone's linear "
                          f"layers have no bias)", hint=hint)


def _rope_theta(raw: dict[str, Any]) -> float:
    """The rotary base: from the RoPE settings, else the top-level `rope_theta`, else 10000."""
    _, rope = _rope_settings(raw)
    theta = rope.get("rope_theta")
    if theta is None:
        theta = raw.get("rope_theta")
    return float(theta) if theta is not None else HF_DEFAULTS["mistral"]["rope_theta"]


def _load_json(config: dict[str, Any] | str | Path) -> tuple[dict[str, Any], str]:
    if isinstance(config, dict):
        return config, "config"
    path = Path(config)
    try:
        raw = json.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a model configuration (a JSON object of fields)")
    return raw, str(path)


def _build(cls: type[ModelConfig], kwargs: dict[str, Any], source: str) -> ModelConfig:
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


PRESETS: dict[str, ModelConfig] = {
    "mistral-7b-v0.1": ModelConfig(),
    # Small enough to train from scratch on 2 CPU cores in minutes, with the real 32000-token vocabulary
    # so the Mistral tokenizer is used unchanged. Keeps GQA (4 query heads share 2 KV heads) and a
    # sliding window shorter than the longest reactions, so both code paths are exercised.
    "tiny": ModelConfig(
        vocab_size=32000,
        dim=128,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=32,
        hidden_dim=384,
        rope_theta=10000.0,
        sliding_window=256,
        norm_eps=1e-5,
        max_seq_len=1024,
    ),
}


# The shapes of the small chemistry Mistral pretrained on CPU (`mistral-cl pretrain`, shipped as
# `--weights chem-small`): the width of `tiny`, so a head on it costs what it costs on `tiny`, and six
# blocks with Mistral's full 4096-token window.
PRESETS["chem-small"] = ModelConfig(vocab_size=32000, dim=128, n_layers=6, n_heads=4, n_kv_heads=2,
                                    head_dim=32, hidden_dim=512, rope_theta=10000.0, sliding_window=4096,
                                    norm_eps=1e-5, max_seq_len=1024)


def resolve_model_config(model: str | None, weights: str | None, default: str = "tiny") -> ModelConfig:
    """The backbone shapes of a run: `model` (a preset name or a config.json path), or those of the
    `weights` directory (checked against `model` when both are given), else the `default` preset."""
    if model is not None and model.endswith(".json"):
        wanted = ModelConfig.from_hf_config(model)
    elif model is not None:
        wanted = ModelConfig.preset(model)
    if weights is None:
        return wanted if model is not None else ModelConfig.preset(default)
    if not Path(weights).is_dir():
        raise InputError("weights directory not found", file=weights,
                         hint="pass a directory with config.json or params.json and *.safetensors")
    found = ModelConfig.from_dir(weights)
    if model is not None:
        differ = [f"{name}: `model` {getattr(wanted, name)}, weights {getattr(found, name)}"
                  for name in wanted.to_dict() if name != "max_seq_len"
                  and getattr(wanted, name) != getattr(found, name)]
        if differ:
            raise InputError(f"the weights do not match `model={model}`: " + "; ".join(differ),
                             file=weights, hint="leave `model` unset to use the weights' own shapes")
    return found
