"""Structure files in and out, streamed, with per-structure error records."""

from .structures import StructureRecord, StructureWriter, expand_inputs, read_structures, write_structures

__all__ = ["StructureRecord", "StructureWriter", "expand_inputs", "read_structures", "write_structures"]
