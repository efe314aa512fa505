import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # -n 2 on 2 cores: two OpenMP threads per worker oversubscribe the machine and spin-wait
    # (on the loaded 2-core machine a small U-Net train step ran 3-5x slower with 2 threads)
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module's tests: on the shared 2-core machine (and under
    ``pytest -n 2``) small ops otherwise wait on a contended thread pool, ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
