"""The allocator setting keeps a step's large temporaries inside the process."""

import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import numpy as np
from mistral_cl.hostmem import keep_freed_memory
if sys.argv[1] == "reuse":
    assert keep_freed_memory()
np.ones(64 << 20).sum()                 # 512 MB, allocated and freed once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(64 << 20).sum()                 # the same size again, as the next step would
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_a_repeated_large_allocation_no_longer_faults_its_pages_in_again():
    default, reuse = page_faults("default"), page_faults("reuse")
    # glibc maps the 512 MB afresh and the kernel faults it in again: 131072 faults in 4 KiB pages, a few
    # hundred where transparent huge pages serve it; kept memory is already there.
    assert default >= 200
    assert reuse < default / 20
