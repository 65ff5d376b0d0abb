"""The op library loads when it was built, and the package works on its references when it was not."""

import glob
import json
import os
import subprocess
import sys

import torch

import e3relax_fast
from e3relax_fast.ops import backend_report, library_status

PACKAGE_DIR = os.path.dirname(e3relax_fast.__file__)


def test_built_library_loads_and_matches_this_torch():
    built = glob.glob(os.path.join(PACKAGE_DIR, "_C*.so"))
    status = library_status()
    if os.environ.get("E3RELAX_BUILD", "auto") == "none":  # the one case where no library is expected
        assert not built and not status.loaded and "not built" in status.reason
        return
    assert built, "the op library was not built: see the pip install output"
    assert status.loaded, status.reason
    assert status.build_info["torch_version"] == torch.__version__
    assert json.loads(torch.ops.e3relax.build_info()) == status.build_info
    assert status.build_info["openmp"] is True
    assert torch._C._dispatch_has_kernel_for_dispatch_key("e3relax::radius_graph_pbc", "CPU")


def test_the_test_only_ops_are_built_apart_and_never_loaded_by_the_package():
    """The CPU harness of the CUDA radius graph lives in its own library (docs/backends.md, "Test
    seams"): built whenever _C is, absent from the production schema, loaded by the tests alone."""
    built = glob.glob(os.path.join(PACKAGE_DIR, "_testing_ops*.so"))
    if os.environ.get("E3RELAX_BUILD", "auto") == "none":
        assert not built
        return
    assert built, "the test-only op library was not built: see the pip install output"
    code = ("import torch, e3relax_fast as e3\n"
            "assert e3.ops.library_status().loaded\n"
            "assert not hasattr(torch.ops.e3relax, '_radius_graph_targets')\n"
            "assert not hasattr(torch.ops.e3relax_testing, 'radius_graph_targets')\n"
            "from e3relax_fast.testing import load_testing_ops\n"
            "assert load_testing_ops()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_report_lists_every_backend_of_every_op_with_a_reason():
    report = backend_report()
    assert set(report) >= {"radius_graph", "vector_message"}
    for entries in report.values():
        assert [e.backend for e in entries] == ["torch", "cpp", "cuda", "triton"]
        assert entries[0].available
        for entry in entries:
            assert entry.available == (entry.reason == "")


def test_without_the_library_the_references_take_over_and_say_so_once():
    code = (
        "import torch, e3relax_fast as e3\n"
        "from e3relax_fast.testing import flat_batch, random_crystal\n"
        "import numpy as np\n"
        "assert not e3.ops.library_status().loaded\n"
        "args = flat_batch([random_crystal(np.random.default_rng(0), 3)])\n"
        "for _ in range(3):\n"
        "    e3.ops.radius_graph(args[0], *args[2:], 4.0)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, E3RELAX_DISABLE_EXTENSION="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert result.stderr.count("compiled ops unavailable") == 1
    assert "using the PyTorch references" in result.stderr
