"""Checkpoints written by `transformers`: the reference the loader and the backbone are held to.

Test-only: imports torch and transformers, which the library itself never does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file

from mistral_cl.config import ModelConfig

# Grouped-query attention (4 query heads share 2 KV heads), a window shorter than the test
# sequences, and a non-default rotary base so that a wrongly propagated constant shows up.
GQA = ModelConfig(vocab_size=101, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                  hidden_dim=128, rope_theta=1000.0, sliding_window=8, max_seq_len=64)

HF_TO_CONSOLIDATED = {
    "embed_tokens": "tok_embeddings", "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2", "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm",
}


def hf_config(config: ModelConfig) -> transformers.MistralConfig:
    return transformers.MistralConfig(**config.to_hf_config(), attn_implementation="eager")


def hf_mistral(config: ModelConfig = GQA, *, seed: int = 0) -> transformers.MistralModel:
    """A float32 `MistralModel` with every parameter random, norm gains included.

    Default initialisation leaves the norm gains at one, which would hide a swapped or missing norm.
    """
    torch.manual_seed(seed)
    model = transformers.MistralModel(hf_config(config)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            elif "embed_tokens" in name:
                param.copy_(torch.randn_like(param))
            else:
                param.copy_(torch.randn_like(param) / param.shape[1] ** 0.5)
    return model


def hf_hidden_states(model: transformers.MistralModel, tokens: np.ndarray, mask: np.ndarray,
                     layer: int | None = None):
    """transformers' hidden states `[batch, seq, dim]` for a padded batch: the final ones, or its
    `hidden_states[layer]` (0: the embeddings)."""
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(tokens, dtype=torch.long),
                    attention_mask=torch.as_tensor(mask, dtype=torch.long),
                    output_hidden_states=layer is not None)
    return (out.last_hidden_state if layer is None else out.hidden_states[layer]).numpy()


def state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: t.detach().float().numpy().copy() for name, t in model.state_dict().items()}


def rotate_half_to_interleaved(weight: np.ndarray, head_dim: int) -> np.ndarray:
    """Row k + c * head_dim/2 of each head goes to row 2k + c: Mistral's own layout of wq/wk."""
    rows, cols = weight.shape
    halves = weight.reshape(rows // head_dim, 2, head_dim // 2, cols)
    return halves.transpose(0, 2, 1, 3).reshape(rows, cols)


def write_consolidated(model: transformers.MistralModel, config: ModelConfig, directory: Path):
    """Mistral's own layout of the same weights: `consolidated.safetensors` + `params.json`."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, array in state_dict(model).items():
        for hf, ours in HF_TO_CONSOLIDATED.items():
            name = name.replace(hf, ours)
        if name.endswith(("attention.wq.weight", "attention.wk.weight")):
            array = rotate_half_to_interleaved(array, config.head_dim)
        tensors[name] = np.ascontiguousarray(array)
    tensors["output.weight"] = np.zeros((config.vocab_size, config.dim), np.float32)
    save_file(tensors, str(directory / "consolidated.safetensors"))
    params = {k: v for k, v in config.to_dict().items() if k != "max_seq_len"}
    (directory / "params.json").write_text(json.dumps(params))


def write_random_consolidated(config: ModelConfig, directory: Path) -> tuple[int, int]:
    """A random float32 `consolidated.safetensors` + `params.json` with `config`'s shapes, written one
    tensor at a time; returns (bytes of all tensors, bytes of the largest tensor)."""
    import equinox as eqx
    import jax

    from mistral_cl.model import Mistral

    rng = np.random.default_rng(0)
    abstract = eqx.filter_eval_shape(Mistral, config, key=jax.random.key(0))
    tensors = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        name = jax.tree_util.keystr(path, simple=True, separator=".")
        if name.startswith("layers."):
            for i in range(config.n_layers):
                tensors[name.replace("layers.", f"layers.{i}.", 1)] = rng.random(leaf.shape[1:], np.float32)
        else:
            tensors[name] = rng.random(leaf.shape, np.float32)
    save_file(tensors, Path(directory) / "consolidated.safetensors")
    sizes = [t.nbytes for t in tensors.values()]
    params = {k: v for k, v in config.to_dict().items() if k != "max_seq_len"}
    (Path(directory) / "params.json").write_text(json.dumps(params))
    return sum(sizes), max(sizes)
