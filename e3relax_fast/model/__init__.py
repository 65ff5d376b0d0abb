"""The E3Relax module and its typed configuration."""

from .config import E3RelaxConfig, apply_overrides, config_from_dict
from .e3relax import E3Relax, E3RelaxLayer

__all__ = ["E3Relax", "E3RelaxConfig", "E3RelaxLayer", "apply_overrides", "config_from_dict"]
