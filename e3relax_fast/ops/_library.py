"""Loads the compiled op library ``e3relax_fast._C`` if it exists and fits this torch.

The package never fails to import for want of the library: ``status()`` says whether it loaded and,
if not, why; the dispatcher then falls back to the pure-PyTorch references.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field

import torch

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class LibraryStatus:
    loaded: bool
    path: str | None
    reason: str  # why it is not loaded; "" when loaded
    build_info: dict = field(default_factory=dict)


def _find_library() -> str | None:
    candidates = sorted(glob.glob(os.path.join(_PACKAGE_DIR, "_C*.so")))
    return candidates[0] if candidates else None


def _load() -> LibraryStatus:
    if os.environ.get("E3RELAX_DISABLE_EXTENSION", "") == "1":
        return LibraryStatus(False, None, "disabled by E3RELAX_DISABLE_EXTENSION=1")
    path = _find_library()
    if path is None:
        return LibraryStatus(False, None, "op library e3relax_fast._C was not built "
                             "(E3RELAX_BUILD=none, or the build failed: reinstall with "
                             "`pip install --no-build-isolation -v .` to see why)")
    try:
        torch.ops.load_library(path)
    except (OSError, RuntimeError) as err:
        return LibraryStatus(False, path, f"op library {os.path.basename(path)} failed to load: {err}")
    info = json.loads(torch.ops.e3relax.build_info())
    built_for = info.get("torch_version", "unknown")
    if built_for.split("+")[0] != torch.__version__.split("+")[0]:
        return LibraryStatus(False, path, f"op library was built for torch {built_for}, this is "
                             f"torch {torch.__version__}: rebuild it", info)
    return LibraryStatus(True, path, "", info)


_STATUS: LibraryStatus | None = None


def status() -> LibraryStatus:
    """Load the library once and report what happened."""
    global _STATUS
    if _STATUS is None:
        _STATUS = _load()
    return _STATUS


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``torch.ops.e3relax.<op>`` exists with a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    if not status().loaded:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"e3relax::{op}", dispatch_key)
