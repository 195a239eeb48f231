"""The replay memory keeps what its policy promises, and the same seed keeps the same reactions."""

import numpy as np
import pytest

from mistral_cl.continual.buffer import MemoryPolicy, ReplayMemory
from mistral_cl.errors import InputError


def _fill(policy: str, tasks: list[np.ndarray], seed: int = 0) -> ReplayMemory:
    memory = ReplayMemory(MemoryPolicy.parse(policy))
    for k, positions in enumerate(tasks):
        memory = memory.add_task(positions, np.random.default_rng([seed, k]))
    return memory


TASKS = [np.arange(k * 100, (k + 1) * 100) for k in range(5)]


def test_all_keeps_every_past_training_reaction():
    np.testing.assert_array_equal(_fill("all", TASKS).positions, np.arange(500))


def test_quota_keeps_n_distinct_reactions_of_each_task():
    memory = _fill("quota:7", TASKS)
    assert len(memory) == 35
    for positions in TASKS:
        assert len(np.intersect1d(memory.positions, positions)) == 7


def test_reservoir_never_exceeds_its_size_and_keeps_distinct_reactions():
    memory = _fill("reservoir:40", TASKS)
    assert len(memory) == 40 and len(np.unique(memory.positions)) == 40 and memory.seen == 500


def test_reservoir_keeps_a_uniform_sample_of_everything_offered():
    size, trials = 20, 1000
    counts = np.zeros(500)
    for trial in range(trials):
        counts[_fill(f"reservoir:{size}", TASKS, seed=trial).positions] += 1
    expected = trials * size / 500  # 40 per reaction
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 600  # 499 degrees of freedom: mean 499, sd 32; a biased sampler is far above
    by_task = counts.reshape(5, 100).sum(axis=1) / (trials * size)
    np.testing.assert_allclose(by_task, 0.2, atol=0.015)  # the first task is not favoured


def test_memory_is_the_same_after_a_json_round_trip_and_with_the_same_seed():
    memory = _fill("reservoir:30", TASKS)
    again = ReplayMemory.from_json(memory.to_json())
    np.testing.assert_array_equal(again.positions, memory.positions)
    assert again.seen == memory.seen and again.policy == memory.policy
    np.testing.assert_array_equal(_fill("reservoir:30", TASKS).positions, memory.positions)


@pytest.mark.parametrize("text", ["reservoir", "quota:0", "ring:5", "all:3", "quota:x"])
def test_malformed_memory_policies_are_input_errors(text):
    with pytest.raises(InputError):
        MemoryPolicy.parse(text)
