"""Deployment artifacts of a trained model: TorchScript (``.ts.pt``) and AOTInductor (``.pt2``).

Both hold :class:`DeployedE3Relax`: raw structures in as flat tensors, the periodic graph built inside,
relaxed positions and cells out. Inputs and outputs (Å; lattice vectors as rows)::

    forward(pos [N,3], z [N] long, cell [B,3,3], pbc [B,3] bool, ptr [B+1] long) -> (pos [N,3], cell [B,3,3])
    forward_layers(...same...) -> (pos_layers [L,N,3], cell_layers [L,B,3,3])     (TorchScript only)

``ops="compiled"`` artifacts call ``torch.ops.e3relax.radius_graph_pbc`` and ``vector_message`` (load
the op library before ``torch.jit.load``: :func:`load_scripted` does); ``ops="reference"`` TorchScript
artifacts use the pure-PyTorch references and load with plain torch. The metadata (JSON) travels in
the file: ``_extra_files["e3relax/metadata.json"]`` of the TorchScript archive, the AOTInductor
package metadata key ``e3relax_metadata``.

TorchScript is deprecated in recent torch (every ``torch.jit.script/save/load`` warns). We keep it
because ``torch::jit::load`` is the one C++ entry that needs nothing but libtorch; the deprecation
warnings of those three calls, and only those, are silenced here around our own calls.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from pathlib import Path
from typing import Any, Iterator, Tuple

import torch
from torch import Tensor, nn

from ._version import __version__
from .model import E3Relax

EXPORT_FORMAT_VERSION = 1
METADATA_FILE = "e3relax/metadata.json"
AOTI_METADATA_KEY = "e3relax_metadata"
OPS_CHOICES = ("compiled", "reference")
_TORCHSCRIPT_DEPRECATION = r"`torch\.jit\.(script|save|load|script_method)` is deprecated"

CONVENTIONS = {
    "units": "positions and cells in Angstrom",
    "cell": "lattice vectors as rows: cell[b, k] is vector k of structure b",
    "ptr": "atoms of structure b are pos[ptr[b]:ptr[b+1]]",
    "z": "atomic numbers (1-118), long",
    "forward": "(pos [N,3], z [N], cell [B,3,3], pbc [B,3] bool, ptr [B+1]) -> (pos [N,3], cell [B,3,3])",
    "forward_layers": "same inputs -> (pos_layers [L,N,3], cell_layers [L,B,3,3]); TorchScript only",
    "aoti": "the AOTInductor package's one entry point returns all layers, as forward_layers",
    "edges": "built inside on the input structure: edge_index[0] source j, [1] target i",
}


@contextlib.contextmanager
def torchscript_deprecation_silenced() -> Iterator[None]:
    """Silence exactly the TorchScript deprecation warnings (``torch.jit.script/save/load``) for our own
    deliberate calls; every other warning still reaches the caller."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCHSCRIPT_DEPRECATION, category=DeprecationWarning)
        yield


class DeployedE3Relax(nn.Module):
    """E3Relax with its graph built inside; see the module docstring for the signature."""

    def __init__(self, model: E3Relax, all_layers: bool = False):
        super().__init__()
        self.model = model
        self.num_elements = int(model.num_elements)
        self.all_layers = all_layers  # forward returns every layer (the AOTI package has one entry point)

    def forward(self, pos: Tensor, z: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor]:
        pos_layers, cell_layers = self.forward_layers(pos, z, cell, pbc, ptr)
        if self.all_layers:
            return pos_layers, cell_layers
        return pos_layers[-1], cell_layers[-1]

    @torch.jit.export
    def forward_layers(self, pos: Tensor, z: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor
                       ) -> Tuple[Tensor, Tensor]:
        if torch.jit.is_scripting():
            # the eager model checks its inputs in Python; a scripted one must say what is wrong itself
            if z.numel() > 0 and (bool((z < 1).any()) or bool((z > self.num_elements).any())):
                raise ValueError("field 'z': atomic numbers must lie in 1.." + str(self.num_elements))
            if ptr.numel() != cell.shape[0] + 1 or (ptr.numel() > 0 and int(ptr[-1]) != pos.shape[0]):
                raise ValueError("field 'ptr': must have B+1 entries ending at N, the number of atoms")
        return self.model(pos, z, cell, pbc, ptr, None, None)


def _deployable(model_or_path: E3Relax | str | Path | None, ops: str, dtype: torch.dtype,
                all_layers: bool = False, device: str = "cpu") -> tuple[DeployedE3Relax, dict]:
    """The model wrapped for deployment, its ops chosen for ``device``: ``ops="compiled"`` holds the op
    library's kernels where they exist (the references elsewhere), ``"reference"`` the references only."""
    from .model.checkpoint import load_model
    from .model.pretrained import resolve_model_path
    from .ops import library_status

    if ops not in OPS_CHOICES:
        raise ValueError(f"ops must be one of {OPS_CHOICES}, got {ops!r}")
    if ops == "compiled" and not library_status().loaded:
        raise RuntimeError(f"ops='compiled' needs the op library: {library_status().reason} "
                           "(or export with ops='reference')")
    if isinstance(model_or_path, E3Relax):
        # a copy: holding ops and freezing parameters must not change the caller's model
        model, checkpoint_metadata = copy.deepcopy(model_or_path), {"model_config": model_or_path.config.to_dict()}
    else:
        model, checkpoint_metadata = load_model(resolve_model_path(model_or_path))
    kind = torch.device(device).type
    backend = ("cuda" if kind == "cuda" else "cpp") if ops == "compiled" else "torch"
    model = model.to(device=device, dtype=dtype).eval().choose_ops(backend, device)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    metadata = {
        "format": "e3relax-deployed",
        "format_version": EXPORT_FORMAT_VERSION,
        "e3relax_fast_version": __version__,
        "torch_version": torch.__version__,
        "ops": ops,
        "dtype": str(dtype).split(".")[-1],
        "model_config": checkpoint_metadata.get("model_config"),
        "graph": {"cutoff": model.graph_cutoff, "max_neighbors": model.max_neighbors,
                  "self_images": model.self_images},
        "elements": checkpoint_metadata.get("elements", []),
        "num_layers": len(model.layers),
        "conventions": CONVENTIONS,
        "checkpoint": {k: checkpoint_metadata[k] for k in ("step", "epoch", "data", "release", "created")
                       if k in checkpoint_metadata},
    }
    metadata["outputs"] = "all layers" if all_layers else "last layer (forward_layers: all)"
    return DeployedE3Relax(model, all_layers), metadata


def export_torchscript(model_or_path: E3Relax | str | Path | None, path: str | Path, ops: str = "compiled",
                       dtype: torch.dtype = torch.float32) -> dict:
    """Script the model (a module, a checkpoint path, a shipped model's name; ``None`` = the shipped
    default) into ``path``; returns the metadata written beside it."""
    deployed, metadata = _deployable(model_or_path, ops, dtype)
    with torchscript_deprecation_silenced():
        scripted = torch.jit.script(deployed)
        torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: json.dumps(metadata, sort_keys=True)})
    return metadata


def load_scripted(path: str | Path, device: str | torch.device | None = None
                  ) -> tuple[torch.jit.ScriptModule, dict]:
    """Load a TorchScript artifact and its metadata, the op library first.

    A compiled-ops artifact in a process without the op library fails with a message saying what to
    install instead of TorchScript's "Unknown builtin op"."""
    from .ops import library_status

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"deployed model {str(path)!r} does not exist")
    extra = {METADATA_FILE: ""}
    try:
        with torchscript_deprecation_silenced():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as err:
        if "e3relax::" in str(err) or "Unknown builtin op" in str(err):
            raise RuntimeError(
                f"{path}: this model calls the compiled e3relax ops, but the op library is not loaded "
                f"({library_status().reason or 'unknown reason'}). Install e3relax_fast with its op library "
                "(`pip install --no-build-isolation e3relax_fast`), or call "
                "torch.ops.load_library('<site-packages>/e3relax_fast/_C.abi3.so') before torch.jit.load, "
                "or re-export with `e3relax export --ops reference` for plain torch.") from None
        raise
    if not extra[METADATA_FILE]:
        raise ValueError(f"{path}: a TorchScript file without e3relax metadata (not made by e3relax export)")
    return module, json.loads(extra[METADATA_FILE])


def _example_inputs(dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Two small crystals (3 and 2 atoms) to trace with; their sizes are marked dynamic."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.8, 1.8, 0.0], [1.8, 0.0, 1.8],
                        [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]], dtype=dtype)
    z = torch.tensor([29, 29, 29, 11, 17])
    cell = torch.stack([torch.eye(3, dtype=dtype) * 3.6, torch.eye(3, dtype=dtype) * 4.0])
    pbc = torch.ones(2, 3, dtype=torch.bool)
    ptr = torch.tensor([0, 3, 5])
    return pos, z, cell, pbc, ptr


def export_aoti(model_or_path: E3Relax | str | Path | None, path: str | Path, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> dict:
    """``torch.export`` + AOTInductor package (``.pt2``) of the compiled-ops model, dynamic in the
    numbers of atoms, structures and edges; runs on ``device``; returns all layers like
    ``forward_layers``. Returns the metadata stored in it."""
    deployed, metadata = _deployable(model_or_path, "compiled", dtype, all_layers=True, device=device)
    metadata["format"] = "e3relax-deployed-aoti"
    metadata["device"] = str(device)
    inputs = tuple(t.to(device) for t in _example_inputs(dtype))
    atoms, structures = torch.export.Dim("atoms", min=1), torch.export.Dim("structures", min=1)
    dynamic_shapes = ({0: atoms}, {0: atoms}, {0: structures}, {0: structures}, {0: structures + 1})
    with torch.no_grad(), torchscript_deprecation_silenced():  # tracing visits the @torch.jit.export method
        program = torch.export.export(deployed, inputs, dynamic_shapes=dynamic_shapes, strict=False)
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(path),
            inductor_configs={"aot_inductor.metadata": {AOTI_METADATA_KEY: json.dumps(metadata, sort_keys=True)}})
    return metadata


def load_aoti(path: str | Path) -> tuple[Any, dict]:
    """An AOTInductor package as a callable ``(pos, z, cell, pbc, ptr) -> (pos_layers, cell_layers)`` and its metadata;
    the op library is loaded first (the package calls its kernels)."""
    from .ops import library_status

    if not library_status().loaded:
        raise RuntimeError(f"{path}: AOTInductor packages of e3relax call the compiled ops, and the op library "
                           f"is not loaded: {library_status().reason}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"deployed model {str(path)!r} does not exist")
    runner = torch._inductor.aoti_load_package(str(path))
    metadata = json.loads(runner.get_metadata()[AOTI_METADATA_KEY])
    return runner, metadata


class _LayersOf(nn.Module):
    """A deployed artifact seen as the eager model (``(pos, z, cell, pbc, ptr) -> all layers``), so
    :class:`~e3relax_fast.relax.E3Relaxer` runs it through its one batching path."""

    def __init__(self, runner: Any, metadata: dict, scripted: bool):
        super().__init__()
        self.runner = runner
        self.scripted = scripted
        self.num_elements = int((metadata.get("model_config") or {}).get("num_elements", 118))

    def forward(self, pos: Tensor, z: Tensor, cell: Tensor, pbc: Tensor, ptr: Tensor) -> Tuple[Tensor, Tensor]:
        if self.scripted:
            return self.runner.forward_layers(pos, z, cell, pbc, ptr)
        return tuple(self.runner(pos, z, cell, pbc, ptr))


def is_deployed_artifact(path: str | Path) -> bool:
    return str(path).endswith((".ts.pt", ".pt2"))


def load_deployed(path: str | Path, device: str | torch.device | None = None) -> tuple[nn.Module, dict]:
    """A ``.ts.pt`` or ``.pt2`` artifact as a module returning all layers, plus its metadata."""
    if str(path).endswith(".pt2"):
        runner, metadata = load_aoti(path)
        if device is not None and torch.device(device).type != metadata.get("device", "cpu").split(":")[0]:
            raise ValueError(f"{path} was compiled for {metadata.get('device')}, not {device}: export it again there")
        return _LayersOf(runner, metadata, scripted=False), metadata
    module, metadata = load_scripted(path, device)
    return _LayersOf(module, metadata, scripted=True), metadata
