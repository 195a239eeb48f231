"""Test-wide set-up: eight simulated CPU devices, so sharding tests run in-process on any machine."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile from scratch, as on a fresh CI machine, and never write into ~/.cache.
os.environ.setdefault("MISTRAL_CL_JAX_CACHE", "")
