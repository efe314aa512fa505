"""The commands' run-time allocator setting (reference §8): glibc reuses a freed batch."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

# Ten rounds of two 64 MiB tensors made and freed, as a training loop does with its batches;
# prints whether the setting was applied and the minor page faults of the ten rounds
# (without it every round maps fresh memory: ~330k faults; with it ~33-66k).
PROBE = """
import resource, sys, torch
from parsing.core.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "apply" else None
x = torch.empty(16 << 20).fill_(0.0); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(10):
    x = torch.empty(16 << 20); x.fill_(i); y = x * 2; del x, y
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(mode: str, **extra_env: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(extra_env, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], int(out[1])


def test_setting_applied_at_run_time_reuses_the_freed_tensor():
    applied, faults = _probe("apply")
    _, faults_default = _probe("skip")
    assert applied == "True"
    assert faults_default > 300_000  # 20 x 64 MiB mapped afresh
    assert faults < faults_default / 3


def test_environment_choice_wins():
    applied, faults = _probe("apply", MALLOC_MMAP_MAX_="65536")
    assert applied == "False"
    assert faults > 300_000
