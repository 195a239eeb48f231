"""The yield model in PyTorch, holding the weights of a JAX `YieldModel`: the other side of the benchmark.

The backbone is transformers' `MistralModel`; LoRA adapters are PEFT's (`peft.inject_adapter_in_model`)
when peft is installed, else `LoRALinear` below, which computes what PEFT's `lora.Linear` computes
(`base(x) + lora_B(lora_A(x)) * alpha / rank`, no LoRA dropout); the MHAR head is written here after
`mistral_cl.head`. `tests/test_torch_reference.py` checks that predictions and gradients equal the JAX
model's, so a timing of one against the other compares the same computation.

Benchmark and test code only: the library itself never imports torch.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import transformers
from torch import nn
from torch.nn import functional as F

from mistral_cl.config import ModelConfig
from mistral_cl.lora import LoRALinear as JaxLoRALinear
from mistral_cl.predictor import Mode, YieldModel
from mistral_cl.train import TrainConfig

LoRABackend = Literal["peft", "torch"]

# Our block leaves -> transformers' module names inside `layers.{i}`.
BLOCK_LINEARS = {
    "attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
}
BLOCK_NORMS = {"attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def available_lora_backends() -> tuple[LoRABackend, ...]:
    return ("peft", "torch") if importlib.util.find_spec("peft") else ("torch",)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        scale = torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps)
        return (x32 * scale * self.weight.float()).to(x.dtype)


def rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding, rotate-half convention; `x` is `[batch, heads, seq, head_dim]`."""
    head_dim = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = positions.float()[..., None] * inv_freq
    cos = torch.cat([angles.cos()] * 2, -1)[:, None]
    sin = torch.cat([angles.sin()] * 2, -1)[:, None]
    x32 = x.float()
    half = head_dim // 2
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], -1)
    return (x32 * cos + rotated * sin).to(x.dtype)


class HeadAttention(nn.Module):
    """Bidirectional multi-head self-attention with RoPE over real tokens (the head's, not the backbone's)."""

    def __init__(self, dim: int, n_heads: int, theta: float) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.n_heads, self.theta = n_heads, theta

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        heads = lambda y: y.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
        q = rotate(heads(self.q(x)), positions, self.theta)
        k = rotate(heads(self.k(x)), positions, self.theta)
        # Padding queries see themselves, as in `mistral_cl.attention.attention_mask`: no empty row.
        visible = mask[:, None, None, :] | torch.eye(t, dtype=torch.bool)
        out = F.scaled_dot_product_attention(q, k, heads(self.v(x)), attn_mask=visible)
        return self.o(out.transpose(1, 2).reshape(b, t, d))


class MHARHead(nn.Module):
    """`mistral_cl.head.MHARHead` in PyTorch: attention and SiLU feed-forward (post-norm), attention
    pooling over real tokens, optional per-channel standardisation, SiLU MLP, sigmoid."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, mlp_dim: int, dropout: float,
                 theta: float, eps: float, mlp_layers: int = 1, standardize: bool = False) -> None:
        super().__init__()
        self.attention = HeadAttention(dim, n_heads, theta)
        self.attention_norm = RMSNorm(dim, eps)
        self.ffn_in, self.ffn_out = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.ffn_norm = RMSNorm(dim, eps)
        self.pool = nn.Linear(dim, 1, bias=False)
        self.pool_shift = nn.Parameter(torch.zeros(dim)) if standardize else None
        self.pool_scale = nn.Parameter(torch.ones(dim)) if standardize else None
        self.mlp_in, self.mlp_out = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, 1)
        self.mlp_hidden = nn.ModuleList(nn.Linear(mlp_dim, mlp_dim) for _ in range(mlp_layers - 1))
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(hidden + self.dropout(self.attention(hidden, positions, mask)))
        x = self.ffn_norm(x + self.dropout(self.ffn_out(F.silu(self.ffn_in(x)))))
        scores = self.pool(x)[..., 0].float().masked_fill(~mask, -math.inf)
        h = torch.einsum("bt,btd->bd", scores.softmax(-1).to(x.dtype), x)
        if self.pool_shift is not None:
            h = (h - self.pool_shift) * self.pool_scale
        for layer in (self.mlp_in, *self.mlp_hidden):
            h = self.dropout(F.silu(layer(h)))
        return torch.sigmoid(self.mlp_out(h)[..., 0].float())


class LoRALinear(nn.Module):
    """PEFT's `lora.Linear` forward without PEFT: `base(x) + lora_B(lora_A(x)) * scaling`."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float) -> None:
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling


class YieldModelTorch(nn.Module):
    """Token ids and mask in, yields in [0, 1] out; positions count real tokens as in the JAX model."""

    def __init__(self, backbone: transformers.MistralModel, head: MHARHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        hidden = self.backbone(input_ids=tokens, attention_mask=mask.long(),
                               position_ids=positions).last_hidden_state
        return self.head(hidden, mask, positions)


def _leaf(tree, path: str):
    return functools.reduce(getattr, path.split("."), tree)


def _tensor(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float32))


def _add_lora(backbone: nn.Module, targets: list[str], rank: int, alpha: float,
              backend: LoRABackend) -> None:
    if backend == "peft":
        import peft

        config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                                 target_modules=targets)
        peft.inject_adapter_in_model(config, backbone)
        return
    for name, module in list(backbone.named_modules()):
        if name.rsplit(".", 1)[-1] in targets:
            parent, child = name.rsplit(".", 1)
            setattr(backbone.get_submodule(parent), child, LoRALinear(module, rank, alpha / rank))


def lora_matrices(module: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """`(lora_A, lora_B)` of an adapted projection, PEFT's or ours."""
    if isinstance(module, LoRALinear):
        return module.lora_A, module.lora_B
    return module.lora_A["default"], module.lora_B["default"]


def from_jax(
    model: YieldModel,
    config: ModelConfig,
    *,
    attn_implementation: str = "sdpa",
    lora_backend: LoRABackend | None = None,
) -> YieldModelTorch:
    """A float32 PyTorch copy of `model` (weights, adapters and head), in training mode."""
    hf_config = transformers.MistralConfig(**config.to_hf_config(), attn_implementation=attn_implementation)
    backbone = transformers.MistralModel(hf_config)
    ours = model.backbone
    linears = {path: _leaf(ours.layers, path) for path in BLOCK_LINEARS}
    lora = {path: linear for path, linear in linears.items() if isinstance(linear, JaxLoRALinear)}
    if lora:
        first = next(iter(lora.values()))
        targets = [BLOCK_LINEARS[path].split(".")[1] for path in lora]
        _add_lora(backbone, targets, first.a.shape[-2], first.scale * first.a.shape[-2],
                  lora_backend or available_lora_backends()[0])
    with torch.no_grad():
        backbone.embed_tokens.weight.copy_(_tensor(ours.tok_embeddings.weight))
        backbone.norm.weight.copy_(_tensor(ours.norm.weight))
        for i, layer in enumerate(backbone.layers):
            for path, name in BLOCK_NORMS.items():
                layer.get_submodule(name).weight.copy_(_tensor(_leaf(ours.layers, path).weight[i]))
            for path, name in BLOCK_LINEARS.items():
                module, linear = layer.get_submodule(name), linears[path]
                if path in lora:
                    lora_a, lora_b = lora_matrices(module)
                    lora_a.weight.copy_(_tensor(linear.a[i]))
                    lora_b.weight.copy_(_tensor(linear.b[i]))
                    module = module.base_layer
                    linear = linear.base
                module.weight.copy_(_tensor(linear.weight[i]))
    return YieldModelTorch(backbone, _head_from_jax(model, config)).train()


def _head_from_jax(model: YieldModel, config: ModelConfig) -> MHARHead:
    ours = model.head
    attention = ours.attention
    head = MHARHead(
        config.dim, attention.n_heads, ours.ffn_in.weight.shape[0], ours.mlp_in.weight.shape[0],
        ours.dropout, attention.rope_theta, ours.attention_norm.eps, 1 + len(ours.mlp_hidden),
        ours.standardizes,
    )
    pairs = {
        head.attention.q: attention.wq, head.attention.k: attention.wk, head.attention.v: attention.wv,
        head.attention.o: attention.wo, head.ffn_in: ours.ffn_in, head.ffn_out: ours.ffn_out,
        head.pool: ours.pool, head.mlp_in: ours.mlp_in, head.mlp_out: ours.mlp_out,
        head.attention_norm: ours.attention_norm, head.ffn_norm: ours.ffn_norm,
        **dict(zip(head.mlp_hidden, ours.mlp_hidden, strict=True)),
    }
    with torch.no_grad():
        if ours.standardizes:
            head.pool_shift.copy_(_tensor(ours.pool_shift))
            head.pool_scale.copy_(_tensor(ours.pool_scale))
        for theirs, mine in pairs.items():
            theirs.weight.copy_(_tensor(mine.weight))
            if getattr(mine, "bias", None) is not None:
                theirs.bias.copy_(_tensor(mine.bias))
    return head


def trainable_parameters(model: YieldModelTorch, mode: Mode) -> list[nn.Parameter]:
    """Marks what trains in `mode` (as `mistral_cl.predictor.trainable_filter`) and returns it."""
    for name, param in model.named_parameters():
        param.requires_grad_(
            mode == "full" or name.startswith("head.") or (mode == "lora" and "lora_" in name)
        )
    return [p for p in model.parameters() if p.requires_grad]


def regression_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean squared error, as `mistral_cl.train.regression_loss` with `kind="mse"`."""
    return ((pred - target).square() * weight).sum() / weight.sum().clamp(min=1.0)


def make_train_step(model: YieldModelTorch, mode: Mode, config: TrainConfig) -> Callable[..., torch.Tensor]:
    """`step(tokens, mask, yields, weight) -> loss`: forward, backward, gradient clipping and AdamW, as
    the JAX step does (a constant learning rate stands in for the schedule, a scalar either way)."""
    params = trainable_parameters(model, mode)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  foreach=True)

    def step(tokens, mask, yields, weight):
        optimizer.zero_grad(set_to_none=True)
        loss = regression_loss(model(tokens, mask), yields, weight)
        loss.backward()
        if config.clip_norm:
            nn.utils.clip_grad_norm_(params, config.clip_norm)
        optimizer.step()
        return loss.detach()

    return step
