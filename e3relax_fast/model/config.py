"""Typed configuration: dataclasses with the paper's defaults, YAML round trip, dotted overrides.

Unknown keys are errors (with their dotted path), so a typo in a YAML file or a ``--set`` never
silently does nothing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

T = TypeVar("T")

LATTICE_COUPLINGS = ("invariant", "paper")
POSITION_UPDATES = ("affine", "cartesian")
LATTICE_NODES = ("separate", "shared")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return config_from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(annotation) or (Any, Any)
        return {_coerce(k, key_type, where): _coerce(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        items = [v if item_type is Any else _coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    return value


def config_from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking types and rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


class YamlConfig:
    """Dict and YAML round trip for a config dataclass (unknown keys are errors, overrides dotted)."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict) -> T:
        return config_from_dict(cls, data)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> T:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the config must be a mapping of keys to values")
        return cls.from_dict(apply_overrides(data, overrides))  # type: ignore[attr-defined]


#: Largest accepted value of each integer hyperparameter: far above any model worth training, far
#: below one that would exhaust memory while being built.
CONFIG_UPPER_BOUNDS = {"hidden_channels": 4096, "num_layers": 64, "num_rbf": 1024, "envelope_exponent": 64,
                       "num_elements": 118}


@dataclass(frozen=True)
class E3RelaxConfig(YamlConfig):
    """Hyperparameters of E3Relax. Defaults are the paper's (and the research code's scripts).

    Attributes:
        hidden_channels: F, channels of every scalar and vector feature.
        num_layers: layers, each predicting positions and cell (layer-wise supervision).
        num_rbf: Gaussians of the radial basis.
        rbf_cutoff: range of the radial basis, Å.
        envelope_exponent: p of the polynomial envelope.
        graph_cutoff: radius of the neighbour search on the input structure, Å.
        max_neighbors: nearest neighbours kept per atom (0 keeps all).
        self_images: "paper" (six fixed self-image edges) or "all" (every own image in the radius).
        num_elements: rows of the element table (atomic numbers 1..num_elements).
        lattice_coupling: "invariant" (lattice-node geometry from the lattice vectors alone:
            translation- and image-choice-invariant) or "paper" (q_ik = l_k - x_i, as the research code).
        position_update: "affine" (each layer moves the atoms by the network's displacement dx, then
            carries them along with the layer's cell change at fixed fractional coordinates:
            x <- (x + dx) L^-1 L') or "cartesian" (x <- x + dx, as the research code). Checkpoints
            without this key were trained "cartesian".
        strain_head: each layer also strains its cell by a symmetric strain read from the bonds
            (``nn.StrainBlock``); the atoms follow it with ``position_update="affine"``. Our addition;
            checkpoints without this key have none.
        lattice_nodes: "separate" (each of the three lattice nodes has its own embedding and weights,
            and messages the atoms in turn, as the paper) or "shared" (one embedding and one set of
            weights for all three, their messages to the atoms summed from the same atom state: a
            permutation of the lattice vectors permutes the predicted cell rows and leaves the
            positions as they are). Our addition; checkpoints without this key are "separate".
    """

    hidden_channels: int = 512
    num_layers: int = 4
    num_rbf: int = 128
    rbf_cutoff: float = 30.0
    envelope_exponent: int = 5
    graph_cutoff: float = 6.0
    max_neighbors: int = 50
    self_images: str = "paper"
    num_elements: int = 118
    lattice_coupling: str = "invariant"
    position_update: str = "cartesian"
    strain_head: bool = False
    lattice_nodes: str = "separate"

    def __post_init__(self) -> None:
        for name, most in CONFIG_UPPER_BOUNDS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if not 1 <= value <= most:
                # an upper bound too: a crafted checkpoint must not allocate gigabytes before failing
                raise ValueError(f"{name} must be in 1..{most}, got {value}")
        if self.hidden_channels % 2:
            raise ValueError(f"hidden_channels must be even (the message MLP uses F/2), got {self.hidden_channels}")
        if self.num_rbf < 2:
            raise ValueError(f"num_rbf must be >= 2, got {self.num_rbf}")
        if not (0 < self.rbf_cutoff <= 1000 and 0 < self.graph_cutoff <= 100):
            raise ValueError(f"rbf_cutoff must be in (0, 1000] Å and graph_cutoff in (0, 100] Å, got "
                             f"{self.rbf_cutoff} and {self.graph_cutoff}")
        if self.max_neighbors < 0:
            raise ValueError(f"max_neighbors must be >= 0, got {self.max_neighbors}")
        if self.self_images not in ("all", "paper"):
            raise ValueError(f"self_images must be 'all' or 'paper', got {self.self_images!r}")
        if self.lattice_coupling not in LATTICE_COUPLINGS:
            raise ValueError(f"lattice_coupling must be one of {LATTICE_COUPLINGS}, got {self.lattice_coupling!r}")
        if self.strain_head and self.position_update != "affine":
            raise ValueError("strain_head needs position_update='affine' (the atoms must follow the strained cell)")
        if self.position_update not in POSITION_UPDATES:
            raise ValueError(f"position_update must be one of {POSITION_UPDATES}, got {self.position_update!r}")
        if self.lattice_nodes not in LATTICE_NODES:
            raise ValueError(f"lattice_nodes must be one of {LATTICE_NODES}, got {self.lattice_nodes!r}")

    @classmethod
    def paper(cls, **changes: Any) -> "E3RelaxConfig":
        """The paper's model: F = 512, 4 layers, 74,636,800 parameters."""
        return dataclasses.replace(cls(), **changes)

    @classmethod
    def small(cls, **changes: Any) -> "E3RelaxConfig":
        """F = 128, for CPU training and the shipped model; everything else as the paper."""
        return dataclasses.replace(cls(hidden_channels=128), **changes)

    @classmethod
    def preset(cls, name: str) -> "E3RelaxConfig":
        presets = {"paper": cls.paper, "small": cls.small}
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; known: {', '.join(presets)}")
        return presets[name]()

