"""Where every array lives on the `(data, fsdp, tensor)` mesh, declared once.

Two tables decide everything. `RULES` names the *logical* axes of each model weight by its path
(`layers`, `embed`, `q_heads`, ...); `LOGICAL_TO_MESH` maps logical axes to mesh axes. LoRA adapters
inherit the axes of the weight they adapt, optimizer state follows its parameter, a continual
strategy's state follows its role (`strategy_state_specs`), and a batch is split over `("data", "fsdp")`
on its first axis. Changing a parallelism layout means editing one line here.

Why these choices:
- Column-parallel projections (wq, wk, wv, w1, w3; `(out, in)` layout) split their output features over
  `tensor`, row-parallel ones (wo, w2) their input features, so each block needs one all-reduce per
  sublayer (Megatron). The model width (`embed`) is split over `fsdp` (ZeRO-3: weights are gathered
  layer by layer inside the scan, gradients reduce-scattered).
- The embedding table `[vocab, dim]` is the largest single weight (0.5 GB in float32, 1 GB more of Adam
  moments for Mistral-7B), so it is split both ways: vocab over `tensor` (a lookup becomes a local
  masked gather plus one all-reduce) and width over `fsdp` like every other weight.
- Norm gains and biases are tiny: replicated. The head is small next to the backbone: only its
  model-width axis is split over `fsdp`, so it adds no divisibility constraint of its own. A head
  ensemble's leading members axis is replicated.
- Heads are never split: `tensor` must divide the number of query heads *and* of KV heads (Mistral-7B:
  8 KV heads, so tensor parallelism up to 8), not merely the feature count.

Everything else a run holds is placed by its role, never by a rule of its own:
- *mirrors the model*: optimizer moments, and the strategy state shaped like the trainable half (EWC's
  Fisher diagonal and anchor, LwF's teacher, a per-task adapter or head) follow each weight's spec;
- *batch*: every step input, the remembered batch of replay and A-GEM, and cached head-mode features
  as they are fed, split by rows over `("data", "fsdp")`;
- *replicated*: counters, scalars (a replay weight, a distillation weight) and PRNG keys.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mistral_cl.errors import InputError
from mistral_cl.model import Mistral
from mistral_cl.predictor import YieldModel
from sharding.mesh import BATCH_AXES

Logical = str | None
MeshAxes = str | tuple[str, ...] | None

LOGICAL_TO_MESH: dict[str, MeshAxes] = {
    "layers": None,  # the scan axis: every device runs every layer
    "vocab": "tensor",
    "embed": "fsdp",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "rank": None,  # LoRA rank: tiny
    "batch": BATCH_AXES,
}

# Axes whose extent counts attention heads of `head_dim` features each; a head is never split.
HEAD_AXES = ("q_heads", "kv_heads")

# Logical axes of every model weight, by its path inside a `YieldModel` (`None`: not sharded).
# Weights are `(out, in)`; backbone leaves carry the leading stacked-layer axis.
RULES: tuple[tuple[str, tuple[Logical, ...]], ...] = (
    ("backbone.tok_embeddings.weight", ("vocab", "embed")),
    ("backbone.layers.attention.wq.weight", ("layers", "q_heads", "embed")),
    ("backbone.layers.attention.wk.weight", ("layers", "kv_heads", "embed")),
    ("backbone.layers.attention.wv.weight", ("layers", "kv_heads", "embed")),
    ("backbone.layers.attention.wo.weight", ("layers", "embed", "q_heads")),
    ("backbone.layers.feed_forward.w1.weight", ("layers", "mlp", "embed")),
    ("backbone.layers.feed_forward.w3.weight", ("layers", "mlp", "embed")),
    ("backbone.layers.feed_forward.w2.weight", ("layers", "embed", "mlp")),
    ("backbone.layers.attention_norm.weight", ("layers", None)),
    ("backbone.layers.ffn_norm.weight", ("layers", None)),
    ("backbone.norm.weight", (None,)),
    ("output.weight", ("vocab", "embed")),  # a language model's own output layer (pretrain.CausalLM)
    ("head.attention.wq.weight", (None, "embed")),
    ("head.attention.wk.weight", (None, "embed")),
    ("head.attention.wv.weight", (None, "embed")),
    ("head.attention.wo.weight", ("embed", None)),
    ("head.ffn_in.weight", (None, "embed")),
    ("head.ffn_out.weight", ("embed", None)),
    ("head.pool.weight", (None, "embed")),
    ("head.molecule.weight", (None, "embed")),
    ("head.pool_shift", (None,)),
    ("head.pool_scale", (None,)),
    ("head.mlp_in.weight", (None, "embed")),
    ("head.mlp_hidden.*.weight", (None, None)),
    ("head.mlp_out.weight", (None, None)),
    ("head.*_norm.weight", (None,)),
    ("head.*.bias", (None,)),
)


def path_name(path: Sequence[Any]) -> str:
    """`backbone.layers.attention.wq.weight` for a pytree key path."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator=".")


def logical_axes(name: str) -> tuple[Logical, ...]:
    """The logical axes of the model weight at `name` (a LoRA `a`/`b` follows its base weight)."""
    base = name.replace(".base.", ".")
    if base.startswith("head.members."):  # a head ensemble: its members' axis, then a head's own
        return (None, *logical_axes("head." + base.removeprefix("head.members.")))
    stem, _, leaf = base.rpartition(".")
    if leaf in ("a", "b"):
        *layers, out_axis, in_axis = logical_axes(f"{stem}.weight")
        return (*layers, "rank", in_axis) if leaf == "a" else (*layers, out_axis, "rank")
    for pattern, axes in RULES:
        if fnmatch.fnmatchcase(base, pattern):
            return axes
    raise InputError(
        f"no sharding rule for model weight {name!r}",
        hint="add its logical axes to sharding.specs.RULES",
    )


def _to_spec(axes: Sequence[Logical]) -> PartitionSpec:
    return PartitionSpec(*(None if a is None else LOGICAL_TO_MESH[a] for a in axes))


def _mesh_size(mesh: Mesh, axes: MeshAxes) -> int:
    if axes is None:
        return 1
    return math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))


def _problems(
    name: str, shape: tuple[int, ...], spec: PartitionSpec, mesh: Mesh, units: Sequence[int] = ()
) -> list[str]:
    """Why `spec` cannot lay out an array of `shape` on `mesh` (empty when it can).

    `units[d]` is the indivisible unit of dimension `d` (the head size on head axes, else 1).
    """
    found = []
    for d, axes in enumerate(spec):
        size, unit = shape[d], (units[d] if units else 1)
        n = _mesh_size(mesh, axes)
        if (size // unit) % n:
            what = f"{size // unit} heads" if unit > 1 else f"size {size}"
            found.append(
                f"{name} {list(shape)}: dimension {d} ({what}) cannot be split over mesh axis "
                f"{axes!r} of size {n}"
            )
    return found


def _raise(problems: list[str], mesh: Mesh) -> None:
    if problems:
        shown = "\n  ".join(problems[:12]) + (f"\n  (+{len(problems) - 12} more)" * (len(problems) > 12))
        raise InputError(
            f"the mesh {dict(mesh.shape)} does not divide these arrays:\n  {shown}",
            hint="choose a mesh whose axis sizes divide these dimensions (see sharding/specs.py)",
        )


def model_specs(model: YieldModel | Mistral, mesh: Mesh | None = None) -> Any:
    """A pytree shaped like `model` with a `PartitionSpec` for every array (holes stay `None`).

    Works on whole models, on either half of `eqx.partition`, and on abstract (`ShapeDtypeStruct`)
    trees. With `mesh`, every dimension is checked to divide evenly, heads included, and an
    `InputError` names each weight and mesh axis that do not.
    """
    prefix = "backbone." if isinstance(model, Mistral) else ""
    backbone = model if isinstance(model, Mistral) else model.backbone
    head_dim = backbone.config.head_dim
    problems: list[str] = []

    def spec_of(path, leaf):
        name = prefix + path_name(path)
        axes = logical_axes(name)
        if len(axes) != len(leaf.shape):
            raise InputError(f"sharding rule for {name!r} has {len(axes)} axes, the array {leaf.shape}")
        spec = _to_spec(axes)
        if mesh is not None:
            units = [head_dim if a in HEAD_AXES else 1 for a in axes]
            problems.extend(_problems(name, tuple(leaf.shape), spec, mesh, units))
        return spec

    specs = jax.tree_util.tree_map_with_path(spec_of, model)
    if mesh is not None:
        _raise(problems, mesh)
    return specs


def _follow(leaf, param, spec: PartitionSpec) -> PartitionSpec:
    """The spec of optimizer-state `leaf` kept for `param`: the same layout on the axes it keeps.

    Adam moments have the parameter's shape. Adafactor's factored moments drop one axis of it; the
    others keep their layout. Placeholders (`(1,)`) and anything else are replicated.
    """
    shape, full = tuple(leaf.shape), tuple(param.shape)
    if shape == full:
        return spec
    padded = tuple(spec) + (None,) * (len(full) - len(spec))
    for d in range(len(full)):
        if full[:d] + full[d + 1 :] == shape:
            return PartitionSpec(*(padded[:d] + padded[d + 1 :]))
    return PartitionSpec()


def opt_state_specs(opt_state: Any, params: Any, mesh: Mesh | None = None) -> Any:
    """A pytree shaped like `opt_state` with a `PartitionSpec` for every array.

    `params` is what the optimizer was initialised with (the trainable half of the model). Subtrees
    that mirror it (moments, EMAs) follow each parameter's spec; counters and scalars are replicated.
    """
    param_specs = model_specs(params, mesh)
    param_def = jax.tree.structure(params)
    param_leaves = jax.tree.leaves(params)
    spec_leaves = jax.tree.leaves(param_specs)

    def mirrors(node) -> bool:
        return node is not None and jax.tree.structure(node) == param_def

    def spec_of(node):
        if mirrors(node):
            leaves = [_follow(x, p, s) for x, p, s in zip(
                jax.tree.leaves(node), param_leaves, spec_leaves, strict=True)]
            return jax.tree.unflatten(param_def, leaves)
        return PartitionSpec()

    specs = jax.tree.map(spec_of, opt_state, is_leaf=mirrors)
    if mesh is not None:
        problems: list[str] = []
        for (path, leaf), spec in zip(jax.tree_util.tree_leaves_with_path(opt_state),
                                      jax.tree.leaves(specs), strict=True):
            problems.extend(_problems(f"optimizer state {path_name(path)}", leaf.shape, spec, mesh))
        _raise(problems, mesh)
    return specs


# A strategy's state (and the `extra` its step reads) has three roles. Whatever mirrors the trainable
# half (EWC's Fisher diagonal and anchor, LwF's previous model, an adapter per task) is recognised by
# its structure and laid out like that half, so it shards exactly as the parameters it shadows. Arrays
# under these top-level keys hold rows of reactions (a device-resident replay memory of token ids or
# cached features) and are split like a batch. Anything else (a loss weight, a counter) is replicated.
BATCH_LIKE_STATE: tuple[str, ...] = ("memory*", "features*")


def strategy_state_specs(state: Any, trainable_specs: Any, mesh: Mesh | None = None) -> Any:
    """A pytree shaped like `state` (a strategy's arrays, or its step's `extra`) with a `PartitionSpec`
    for every array, by role (see `BATCH_LIKE_STATE`).

    `trainable_specs` is `model_specs` of the trainable half: a subtree of `state` with that half's
    structure takes these specs leaf for leaf. Batch-like arrays are split over `("data", "fsdp")` by
    rows, or replicated when `mesh` is given and their rows do not divide over it. With `mesh`, every
    other layout is checked as `model_specs` checks it.
    """
    trainable = jax.tree.structure(trainable_specs)

    def mirrors(node) -> bool:
        return node is not None and jax.tree.structure(node) == trainable

    def spec_of(path, node):
        if mirrors(node):
            return trainable_specs
        if path and any(fnmatch.fnmatchcase(path_name(path[:1]), p) for p in BATCH_LIKE_STATE):
            split = PartitionSpec(LOGICAL_TO_MESH["batch"], *(None,) * (len(node.shape) - 1))
            if node.shape and (mesh is None or not _problems("", tuple(node.shape), split, mesh)):
                return split
        return PartitionSpec()

    specs = jax.tree_util.tree_map_with_path(spec_of, state, is_leaf=mirrors)
    if mesh is not None:
        problems: list[str] = []
        for (path, leaf), spec in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(specs),
                                      strict=True):
            problems.extend(_problems(f"strategy state {path_name(path)}", tuple(leaf.shape), spec, mesh))
        _raise(problems, mesh)
    return specs


def batch_specs(batch: Any, mesh: Mesh | None = None) -> Any:
    """Every array of `batch` (a `Batch`, or a tuple of them) split over `("data", "fsdp")` by rows."""

    def spec_of(path, leaf):
        spec = PartitionSpec(LOGICAL_TO_MESH["batch"], *(None,) * (len(leaf.shape) - 1))
        if mesh is not None:
            _raise(_problems(f"batch {path_name(path)}", tuple(leaf.shape), spec, mesh), mesh)
        return spec

    return jax.tree_util.tree_map_with_path(spec_of, batch)


def shardings(specs: Any, mesh: Mesh) -> Any:
    """`NamedSharding`s on `mesh` for a pytree of `PartitionSpec`s (holes stay `None`)."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))
