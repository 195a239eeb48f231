"""`mistral-cl convert`: weights -> checkpoint, streamed, restorable into any sharding."""

import subprocess
import sys
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest
from hf_fixtures import GQA, hf_mistral, write_random_consolidated
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mistral_cl.cli import main
from mistral_cl.config import ModelConfig
from mistral_cl.convert import convert, load_converted
from mistral_cl.model import Mistral
from mistral_cl.weights import load_mistral

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    hf_mistral(GQA).save_pretrained(path, safe_serialization=True)
    return path


def _arrays(model):
    return [np.asarray(x, np.float32) for x in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_converted_weights_restore_equal_to_a_direct_load(hf_dir, tmp_path, dtype):
    assert main(["convert", "--from", str(hf_dir), "--to", str(tmp_path / "ckpt"), "--dtype", dtype]) == 0
    restored = load_converted(tmp_path / "ckpt")
    direct = load_mistral(hf_dir, dtype=np.float32 if dtype == "float32" else jax.numpy.bfloat16)
    assert restored.config == direct.config == ModelConfig.from_dir(tmp_path / "ckpt")
    for a, b in zip(_arrays(restored), _arrays(direct), strict=True):
        np.testing.assert_array_equal(a, b)
    assert restored.layers.attention.wq.weight.dtype == jax.numpy.dtype(dtype)


def test_restoring_converted_weights_gives_each_device_only_its_shard(hf_dir, tmp_path):
    convert(hf_dir, tmp_path / "ckpt", "float32")
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("fsdp", "tensor"))
    abstract = eqx.filter_eval_shape(Mistral, GQA, key=jax.random.key(0))
    spec = lambda leaf: NamedSharding(mesh, PartitionSpec(None, "tensor", "fsdp") if leaf.ndim == 3
                                      else PartitionSpec())
    model = load_converted(tmp_path / "ckpt", sharding=jax.tree.map(spec, abstract))
    wq = model.layers.attention.wq.weight
    assert {s.data.shape for s in wq.addressable_shards} == {(GQA.n_layers, GQA.dim // 4, GQA.dim // 2)}
    for a, b in zip(_arrays(model), _arrays(load_mistral(hf_dir)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_converting_into_an_existing_checkpoint_is_refused(hf_dir, tmp_path, capsys):
    convert(hf_dir, tmp_path / "ckpt", "float32")
    assert main(["convert", "--from", str(hf_dir), "--to", str(tmp_path / "ckpt")]) == 2
    assert "already holds converted weights" in capsys.readouterr().err


MEASURE_PEAK = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    from mistral_cl import checkpoint
    from mistral_cl.convert import convert

    checkpoint._IN_FLIGHT_BYTES = 32 << 20  # the write queue's bound, not the model, sets the peak

    def status(field):
        line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    jnp.zeros(1).block_until_ready()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    before = status("VmRSS")
    convert(sys.argv[1], sys.argv[2], "float32")
    print(status("VmHWM") - before)
""")


def test_conversion_streams_tensor_by_tensor(tmp_path):
    if not Path("/proc/self/clear_refs").exists():
        pytest.fail("this test needs Linux /proc to read the peak resident size")
    config = ModelConfig(vocab_size=4000, dim=1024, n_layers=6, n_heads=8, n_kv_heads=4, head_dim=128,
                         hidden_dim=3072, sliding_window=None)
    model_bytes, largest = write_random_consolidated(config, tmp_path)
    result = subprocess.run([sys.executable, "-c", MEASURE_PEAK, str(tmp_path), str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, check=True)
    peak = int(result.stdout.split()[-1])
    print(f"model {model_bytes / 2**20:.0f} MiB, largest tensor {largest / 2**20:.0f} MiB, "
          f"conversion peak {peak / 2**20:.0f} MiB")
    assert model_bytes > 250 * 2**20
    assert peak < 32 * 2**20 + 4 * largest + 64 * 2**20 < 0.6 * model_bytes
