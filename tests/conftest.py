"""Test-wide set-up: eight simulated CPU devices, so sharding tests run in-process on any machine;
the command line's default mesh is one device (`MISTRAL_CL_MESH`), as on a CPU user's machine.

Every session starts with an empty JAX compilation cache of its own (as a fresh CI machine has), in a
temporary directory that is removed at exit, never ~/.cache. Within the session it is shared by every
test, every xdist worker and the command-line processes the tests start, so a program that several
tests compile (the same step on the same shapes) is compiled once.
"""

import atexit
import os
import shutil
import tempfile

# The tests compile hundreds of small programs and run each only a few times, so XLA's backend (LLVM)
# optimisation is turned off: it halves the compile time, and the programs compute the same numbers
# (no fast-math either way), only their machine code is slower. XLA's newer CPU fusion emitters are
# turned off too: the classic ones halve the backend compile time again (a micro continual run: 4.8 s
# against 10.0 s of compiling). They may fuse in another order, so a result can differ in its last
# bits (a micro model's loss and gradients: 99.7 % of the values bit-equal, the rest within float32
# rounding); every comparison in the suite is between programs compiled with the same flags.
# Subprocesses inherit the flags.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Commands run on one device, as on a CPU user's machine, unless a test names a mesh (--mesh).
os.environ["MISTRAL_CL_MESH"] = "1x1x1"
# Under pytest-xdist (`make test` runs two workers) the controller's conftest runs first and its
# directory reaches the workers through the environment, so they share one cache; the controller
# removes it at exit.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("MISTRAL_CL_TESTS_JAX_CACHE"):
    _CACHE = os.environ["MISTRAL_CL_TESTS_JAX_CACHE"]
else:
    _CACHE = tempfile.mkdtemp(prefix="mistral-cl-tests-jax-")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["MISTRAL_CL_TESTS_JAX_CACHE"] = _CACHE
os.environ["MISTRAL_CL_JAX_CACHE"] = _CACHE
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
