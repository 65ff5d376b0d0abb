"""tune_cpu_allocator: glibc accepts both settings (where the process runs on glibc)."""

import platform

import pytest

from e3relax_fast import tune_cpu_allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's; elsewhere the call does nothing")
def test_glibc_accepts_the_settings():
    assert tune_cpu_allocator() is True
