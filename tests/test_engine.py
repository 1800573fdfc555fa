"""The training engine's process-level setting (issue 7): the allocator. Each case runs in a fresh interpreter,
since the setting is made once per process."""
import subprocess
import sys

import pytest

SNIPPET = """
import ctypes, resource, torch
from ticketkit.train import tune_allocator
state = tune_allocator()
assert tune_allocator() == state  # once per process
# A training-sized loop of large temporaries: with the setting, freed memory is reused, not re-mapped and faulted in.
x = torch.randn(256, 256)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    y = torch.empty(12 * 1024 * 1024).fill_(1.0)  # 48 MiB: above the most glibc's dynamic mmap threshold reaches
    del y
print(state, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _run(env_value):
    import os

    env = {**os.environ, "TICKETKIT_MALLOC": env_value}
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, check=True)
    state, faults = out.stdout.strip().rsplit(" ", 1)
    return state, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's")
def test_allocator_setting_stops_per_step_page_faults_and_can_be_turned_off():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    tuned_state, tuned = _run("")
    system_state, system = _run("system")
    assert tuned_state == "glibc: no mmap, no trim"
    assert system_state == "system"
    # 20 x 48 MiB re-mapped is ~245k page faults with glibc's defaults; kept in the heap, only the first one faults.
    assert system > 20 * 12288 // 2
    assert tuned < system / 4
