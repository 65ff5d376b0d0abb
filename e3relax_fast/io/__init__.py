"""Structure files in and out, streamed, with per-structure error records."""

from .structures import StructureRecord, expand_inputs, read_file, read_structures
from .writers import StructureWriter, write_structures

__all__ = ["StructureRecord", "StructureWriter", "expand_inputs", "read_file", "read_structures", "write_structures"]
