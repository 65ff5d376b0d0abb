"""Every Python block of README.md and docs/*.md runs, as written, on the shipped model and the example
files, so no snippet can rot. The blocks of one file run in order in one namespace (as a reader pastes
them), in a scratch folder that sees the repository's ``examples/`` and ``tests/data/``."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


def test_the_documents_hold_python_blocks():
    # a fence spelled differently (```py, ``` python) would silently escape the test below
    for path in DOCUMENTS:
        fences = re.findall(r"^```\s*(\w*)", path.read_text(), re.M)
        assert not {f for f in fences if f and f != "python" and f.startswith("py")}, path.name
    assert len(python_blocks(ROOT / "README.md")) >= 1  # the README keeps one short example; docs/ the rest
    assert sum(len(python_blocks(p)) for p in DOCUMENTS) >= 5


@pytest.mark.parametrize("path", [p for p in DOCUMENTS if python_blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    (tmp_path / "tests").mkdir()
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "tests" / "data").symlink_to(ROOT / "tests" / "data")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for index, code in enumerate(python_blocks(path)):
        exec(compile(code, f"{path.name}, python block {index + 1}", "exec"), namespace)  # noqa: S102
