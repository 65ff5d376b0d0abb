"""The house rules that keep the package readable, checked on its source (docs: the brief's "How we
like the code"): layers import only downward, no function over 60 lines, the relaxer's parts stay
small and use each other's public names only."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "e3relax_fast"

#: Each subpackage's layer: a module may import its own layer or lower ones, never a higher one.
LAYERS = {"kernels": -1, "ops": 0, "nn": 1, "model": 2}  # kernels: the Triton sources
USER_FACING = 3  # relax, io, data, train, export, metrics, cli, confidence, ...


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _layer(parts: tuple[str, ...]) -> int:
    return LAYERS.get(parts[0], USER_FACING) if parts else USER_FACING


def _imported_packages(path: Path, tree: ast.Module):
    """The first package component, under e3relax_fast, of every relative or absolute import."""
    here = path.relative_to(PACKAGE).parent.parts
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                target = base + tuple((node.module or "").split(".")) if node.module else base
            elif (node.module or "").startswith("e3relax_fast."):
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            yield node.lineno, tuple(p for p in target if p)


def test_layers_import_only_downward():
    upward = []
    for path, tree in _modules():
        own = _layer(path.relative_to(PACKAGE).parts[:-1])
        for line, target in _imported_packages(path, tree):
            if _layer(target) > own:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {'.'.join(target)}")
    assert not upward, upward


def test_no_function_is_longer_than_sixty_lines():
    long = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, tree in _modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60]
    assert not long, long


def test_the_relaxer_parts_are_small_and_share_only_public_names():
    for path in (PACKAGE / "relax").glob("*.py"):
        assert len(path.read_text().splitlines()) < 250, path.name
    private = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("e3relax_fast")):
                private += [f"{path.relative_to(PACKAGE)} imports {alias.name}" for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__")
                            and not list(PACKAGE.rglob(alias.name + ".py"))]  # a private module is fine
    assert not private, private
