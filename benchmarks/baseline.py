"""Import modules as they were at an earlier git revision, beside the working tree's copies, so
that a benchmark can run the old and the new code interleaved in one process."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def modules_at(revision: str, names: list[str]) -> dict[str, ModuleType]:
    """The modules ``names`` (e.g. ``"parsing.synth.render"``) imported from ``revision``.

    Their top-level packages are extracted from ``git archive`` into a temporary folder and
    imported from there under their usual names; afterwards ``sys.modules`` is restored, so
    the old modules live on only through the returned objects (and what they imported).
    """
    packages = sorted({name.split(".")[0] for name in names})
    folder = tempfile.mkdtemp(prefix=f"baseline-{revision[:12]}-")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, *packages],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)

    def ours(module: str) -> bool:
        return module.split(".")[0] in packages

    saved = {k: v for k, v in sys.modules.items() if ours(k)}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, folder)
    try:
        return {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(folder)
        for k in [k for k in sys.modules if ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
