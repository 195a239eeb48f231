"""Loading checkpoints: both layouts, dtypes, shardings, streaming memory and every user mistake."""

import dataclasses
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from hf_fixtures import GQA, hf_config, hf_mistral, state_dict, write_consolidated, write_random_consolidated
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

from mistral_cl.config import ModelConfig
from mistral_cl.errors import InputError
from mistral_cl.layers import apply_rope
from mistral_cl.model import Mistral
from mistral_cl.weights import iter_tensors, load_mistral

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference():
    return hf_mistral()


@pytest.fixture(scope="module")
def hf_dir(reference, tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    reference.save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="module")
def loaded(hf_dir):
    return load_mistral(hf_dir)


def assert_same_parameters(a: Mistral, b: Mistral) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_hugging_face_names_land_on_the_matching_leaves(reference, loaded):
    weights = state_dict(reference)
    np.testing.assert_array_equal(loaded.tok_embeddings.weight, weights["embed_tokens.weight"])
    np.testing.assert_array_equal(loaded.layers.feed_forward.w1.weight[1],
                                  weights["layers.1.mlp.gate_proj.weight"])
    np.testing.assert_array_equal(loaded.layers.feed_forward.w2.weight[0],
                                  weights["layers.0.mlp.down_proj.weight"])
    np.testing.assert_array_equal(loaded.layers.ffn_norm.weight[1],
                                  weights["layers.1.post_attention_layernorm.weight"])
    assert loaded.config == GQA


def test_causal_lm_checkpoint_loads_its_backbone_and_ignores_the_lm_head(reference, loaded,
                                                                          tmp_path):
    causal = transformers.MistralForCausalLM(hf_config(GQA))
    causal.model.load_state_dict(reference.state_dict())
    causal.save_pretrained(tmp_path, safe_serialization=True)
    assert {"lm_head.weight", "model.norm.weight"} <= set(load_file(tmp_path / "model.safetensors"))
    assert_same_parameters(load_mistral(tmp_path), loaded)


def test_consolidated_checkpoint_loads_like_the_hugging_face_one(reference, loaded, tmp_path):
    write_consolidated(reference, GQA, tmp_path)
    assert_same_parameters(load_mistral(tmp_path), loaded)


def test_rotary_permutation_turns_interleaved_scores_into_rotate_half_scores(reference, tmp_path):
    """Attention scores computed Mistral's way on consolidated weights equal ours after loading."""
    write_consolidated(reference, GQA, tmp_path)
    raw = load_file(tmp_path / "consolidated.safetensors")
    ours = load_mistral(tmp_path)
    x = np.random.default_rng(0).standard_normal((12, GQA.dim)).astype(np.float32)
    positions = np.arange(12)

    def mistral_scores(wq, wk):
        q = interleaved_rope((x @ wq.T).reshape(12, GQA.n_heads, GQA.head_dim), positions)
        k = interleaved_rope((x @ wk.T).reshape(12, GQA.n_kv_heads, GQA.head_dim), positions)
        return np.einsum("qhd,khd->hqk", q, np.repeat(k, GQA.n_heads // GQA.n_kv_heads, axis=1))

    def our_scores(wq, wk):
        rope = lambda y, n: np.asarray(apply_rope(
            jnp.asarray(y.reshape(1, 12, n, GQA.head_dim)), jnp.asarray(positions[None]),
            GQA.rope_theta))[0]
        q, k = rope(x @ wq.T, GQA.n_heads), rope(x @ wk.T, GQA.n_kv_heads)
        return np.einsum("qhd,khd->hqk", q, np.repeat(k, GQA.n_heads // GQA.n_kv_heads, axis=1))

    expected = mistral_scores(raw["layers.1.attention.wq.weight"],
                              raw["layers.1.attention.wk.weight"])
    got = our_scores(np.asarray(ours.layers.attention.wq.weight[1]),
                     np.asarray(ours.layers.attention.wk.weight[1]))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def interleaved_rope(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Mistral's reference rotary: each (2k, 2k+1) pair is a complex number turned by angle k."""
    half = GQA.head_dim // 2
    freqs = 1.0 / GQA.rope_theta ** (np.arange(0, GQA.head_dim, 2) / GQA.head_dim)
    turn = np.exp(1j * positions[:, None] * freqs)[:, None, :]
    pairs = x.reshape(*x.shape[:-1], half, 2)
    rotated = (pairs[..., 0] + 1j * pairs[..., 1]) * turn
    return np.stack([rotated.real, rotated.imag], axis=-1).reshape(x.shape).astype(np.float32)


def test_iter_tensors_streams_our_names_in_the_dtype_on_disk(reference, tmp_path):
    reference.to(torch.bfloat16).save_pretrained(tmp_path, safe_serialization=True)
    reference.to(torch.float32)
    seen = dict(iter_tensors(tmp_path))
    assert len(seen) == 3 + 9 * GQA.n_layers - 1  # embeddings, norm, 9 tensors per block
    assert {"tok_embeddings.weight", "norm.weight", "layers.1.attention.wk.weight"} <= set(seen)
    assert all(a.dtype == ml_dtypes.bfloat16 for a in seen.values())
    assert seen["layers.0.feed_forward.w3.weight"].shape == (GQA.hidden_dim, GQA.dim)


@pytest.mark.parametrize("stored", ["float32", "bfloat16"])
def test_parameters_are_cast_to_the_requested_dtype_as_torch_rounds(reference, tmp_path, stored):
    reference.to(getattr(torch, stored)).save_pretrained(tmp_path, safe_serialization=True)
    weights = {k: v.float().numpy() for k, v in reference.to(torch.bfloat16).state_dict().items()}
    reference.to(torch.float32)
    model = load_mistral(tmp_path, dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(model)} == {jnp.dtype(jnp.bfloat16)}
    np.testing.assert_array_equal(np.asarray(model.layers.attention.wv.weight[1], np.float32),
                                  weights["layers.1.self_attn.v_proj.weight"])
    upcast = load_mistral(tmp_path)
    if stored == "bfloat16":
        np.testing.assert_array_equal(upcast.tok_embeddings.weight, weights["embed_tokens.weight"])
    assert upcast.tok_embeddings.weight.dtype == jnp.float32


def test_mismatched_tensors_are_all_listed_in_one_error(hf_dir, tmp_path):
    tensors = load_file(hf_dir / "model.safetensors")
    del tensors["layers.1.mlp.up_proj.weight"]
    tensors["layers.0.self_attn.rotary_emb.inv_freq"] = np.zeros(8, np.float32)
    tensors["layers.2.input_layernorm.weight"] = np.zeros(GQA.dim, np.float32)
    tensors["layers.0.self_attn.q_proj.weight"] = np.zeros((32, GQA.dim), np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    shutil.copy(hf_dir / "config.json", tmp_path)
    with pytest.raises(InputError) as error:
        load_mistral(tmp_path)
    message = str(error.value)
    assert "4 problems" in message
    assert "missing layers.1.mlp.up_proj.weight (expected [128, 64])" in message
    assert "unexpected layers.0.self_attn.rotary_emb.inv_freq [8]" in message
    assert "unexpected layers.2.input_layernorm.weight [64]" in message
    assert ("wrong shape layers.0.self_attn.q_proj.weight: expected [64, 64], found [32, 64]"
            in message)


def test_a_directory_without_weights_says_what_it_looked_for(hf_dir, tmp_path):
    shutil.copy(hf_dir / "config.json", tmp_path)
    with pytest.raises(InputError, match="(?s)no model weights found.*model.safetensors"):
        load_mistral(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        load_mistral(tmp_path / "absent")


def test_a_truncated_weights_file_is_an_input_error(hf_dir, tmp_path):
    shutil.copy(hf_dir / "config.json", tmp_path)
    data = (hf_dir / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_mistral(tmp_path)


def test_a_given_config_must_agree_with_the_files_on_every_field_it_names(hf_dir):
    wrong = dataclasses.replace(GQA, sliding_window=16, norm_eps=1e-6)
    with pytest.raises(InputError, match=r"sliding_window: given 16, files say 8.*norm_eps"):
        load_mistral(hf_dir, config=wrong)
    shorter = dataclasses.replace(GQA, max_seq_len=32)
    assert load_mistral(hf_dir, config=shorter).config == shorter


def test_weights_without_a_config_file_need_a_config(hf_dir, loaded, tmp_path):
    shutil.copy(hf_dir / "model.safetensors", tmp_path)
    with pytest.raises(InputError, match="neither config.json nor params.json"):
        load_mistral(tmp_path)
    assert_same_parameters(load_mistral(tmp_path, config=GQA), loaded)


def test_each_leaf_gets_the_requested_sharding_and_keeps_its_values(hf_dir, loaded):
    mesh = jax.make_mesh((8,), ("tensor",))
    split, replicated = NamedSharding(mesh, P(None, "tensor", None)), NamedSharding(mesh, P())
    as_tree = eqx.tree_at(lambda m: m.layers.attention.wq.weight,
                          jax.tree.map(lambda _: replicated, loaded), split)
    by_name = lambda name: split if name == "layers.attention.wq.weight" else None
    for sharding in (as_tree, by_name):
        model = load_mistral(hf_dir, sharding=sharding)
        wq = model.layers.attention.wq.weight
        assert wq.sharding.is_equivalent_to(split, wq.ndim)
        assert {shard.data.shape for shard in wq.addressable_shards} == {(GQA.n_layers, 8, GQA.dim)}
        assert_same_parameters(model, loaded)
    assert load_mistral(hf_dir, sharding=as_tree).norm.weight.sharding == replicated


MEASURE_PEAK = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp
    from mistral_cl.weights import load_mistral

    def status(field):
        line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    jnp.zeros(1).block_until_ready()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak resident size to the current one
    before = status("VmRSS")
    jax.block_until_ready(load_mistral(sys.argv[1]))
    print(status("VmHWM") - before)
""")


def test_loading_streams_with_a_peak_well_under_twice_the_model_size(tmp_path):
    config = ModelConfig(vocab_size=8000, dim=1024, n_layers=4, n_heads=8, n_kv_heads=4,
                         head_dim=128, hidden_dim=3072, sliding_window=None)
    model_bytes, _ = write_random_consolidated(config, tmp_path)
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to read the peak resident size")
    result = subprocess.run([sys.executable, "-c", MEASURE_PEAK, str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, check=True)
    peak = int(result.stdout.split()[-1])
    print(f"model {model_bytes / 2**20:.0f} MiB, load peak {peak / 2**20:.0f} MiB "
          f"({peak / model_bytes:.2f}x)")
    assert model_bytes > 200 * 2**20
    assert peak < 1.3 * model_bytes
