"""Models shipped inside the package (``e3relax_fast/pretrained/``), found by name, never downloaded; and an
untrained one for pipeline checks."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import E3RelaxConfig
from .e3relax import E3Relax

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_MODEL = "e3relax-small"


def pretrained_names() -> list[str]:
    """Names of the shipped models (file stems of ``pretrained/*.ckpt``)."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.ckpt"))


def resolve_model_path(name_or_path: str | Path | None = None) -> Path:
    """The checkpoint file for ``name_or_path``: ``None`` is the default shipped model, a shipped
    model's name is its file, anything else is a path (which must exist)."""
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    shipped = PRETRAINED_DIR / f"{name}.ckpt"
    if shipped.is_file():
        return shipped
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if name_or_path is None:
        raise FileNotFoundError(f"the default model {DEFAULT_MODEL!r} is missing from {PRETRAINED_DIR} "
                                "(a broken install? reinstall e3relax_fast)")
    raise FileNotFoundError(f"model {name!r} is neither a shipped model ({', '.join(pretrained_names()) or 'none'}) "
                            "nor an existing checkpoint file")


def untrained_model(preset: str = "paper", seed: int = 0) -> E3Relax:
    """A randomly initialised E3Relax from a named config, for demos and pipeline checks only."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return E3Relax(E3RelaxConfig.preset(preset)).eval()
    finally:
        torch.random.set_rng_state(generator_state)
