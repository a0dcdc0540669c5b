"""The layout's rules, read from the source: no import circle, nothing imports upward, the faces
never import the emulator, the core never imports a face or protobuf, limiting knows no AWS."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "gateway"

#: Each package's layer: a module may import its own layer or a lower one, never a higher one.
LAYERS: dict[str, int] = {
    "gateway.domain": 0,
    "gateway.errors": 0,
    "gateway.clock": 0,
    "gateway.names": 0,
    "gateway.regions": 0,
    "gateway.awsjson": 0,
    "gateway.config": 0,
    "gateway.config_file": 0,
    "gateway.observability": 0,
    "gateway.startup": 0,
    "gateway.process": 0,
    "gateway._proto": 0,
    "gateway.limiting": 1,
    "gateway.upstream": 1,
    "gateway.emulator": 1,
    "gateway.core": 2,
    "gateway.faces": 3,
    "gateway.app": 4,
    "gateway.tools": 4,
    "gateway.cli": 5,
    "gateway.__main__": 5,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file, function-level imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from gateway.tools import bench` depends on the module gateway.tools.bench (the
            # package's __init__ runs too, but that is Python's doing, not a design dependency)
            submodules = {f"{node.module}.{a.name}" for a in node.names}
            modules = {m for m in submodules if _is_module(m)}
            found.update(modules if modules == submodules else {node.module, *modules})
    return found


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    modules = {
        _module_name(p): p for p in ROOT.rglob("*.py") if "_proto" not in p.relative_to(ROOT).parts
    }
    return {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def _all_imports() -> dict[str, set[str]]:
    return {
        _module_name(p): _imports(p)
        for p in ROOT.rglob("*.py")
        if "_proto" not in p.relative_to(ROOT).parts
    }


def _layer(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class TestImportGraph:
    def test_no_import_circle(self) -> None:
        """No chain of imports (function-level ones included) leads back to where it began."""
        graph = _graph()
        state: dict[str, int] = {}
        path: list[str] = []

        def visit(node: str) -> None:
            state[node] = 1
            path.append(node)
            for nxt in sorted(graph[node]):
                if state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    pytest.fail("import circle: " + " -> ".join(cycle))
                if nxt not in state:
                    visit(nxt)
            path.pop()
            state[node] = 2

        for node in sorted(graph):
            if node not in state:
                visit(node)

    def test_every_module_is_in_a_layer(self) -> None:
        """A new package must say where it stands before anything may import it."""
        modules = [m for m in _graph() if m != "gateway"]
        assert modules, "no module found under gateway/"
        for module in modules:
            assert _layer(module) >= 0, module

    def test_nothing_imports_upward(self) -> None:
        """faces -> core -> limiting/upstream -> domain: never the other way."""
        upward = [
            f"{mod} (layer {_layer(mod)}) imports {dep} (layer {_layer(dep)})"
            for mod, deps in _graph().items()
            if mod != "gateway"
            for dep in deps
            if dep != "gateway" and _layer(dep) > _layer(mod)
        ]
        assert upward == []

    def test_faces_never_import_the_emulator(self) -> None:
        """A face speaks AWS's wire through the neutral module, not the emulator's code."""
        bad = [
            f"{mod} imports {dep}"
            for mod, deps in _all_imports().items()
            if _under(mod, "gateway.faces") or _under(mod, "gateway.core")
            for dep in deps
            if _under(dep, "gateway.emulator")
        ]
        assert bad == []

    def test_the_core_imports_no_face_and_no_protobuf(self) -> None:
        """The core's vocabulary is the domain; protobuf and transports are the faces' business."""
        bad = [
            f"{mod} imports {dep}"
            for mod, deps in _all_imports().items()
            if _under(mod, "gateway.core")
            for dep in deps
            if _under(dep, "gateway.faces")
            or _under(dep, "gateway._proto")
            or _under(dep, "google.protobuf")
            or _under(dep, "grpc")
            or _under(dep, "aiohttp")
        ]
        assert bad == []

    def test_limiting_knows_nothing_of_aws(self) -> None:
        """The budget is about tokens; botocore, the upstream and the core are not its concern."""
        bad = [
            f"{mod} imports {dep}"
            for mod, deps in _all_imports().items()
            if _under(mod, "gateway.limiting")
            for dep in deps
            if any(
                _under(dep, p)
                for p in ("botocore", "aiobotocore", "gateway.upstream", "gateway.core")
            )
        ]
        assert bad == []

    def test_the_emulator_shares_no_gateway_logic(self) -> None:
        """The emulator is AWS's side: it may use the neutral wire, names and settings only."""
        allowed = ("gateway.emulator", "gateway.awsjson", "gateway.names", "gateway.config")
        bad = [
            f"{mod} imports {dep}"
            for mod, deps in _all_imports().items()
            if _under(mod, "gateway.emulator")
            for dep in deps
            if _under(dep, "gateway") and not any(_under(dep, a) for a in allowed)
        ]
        assert bad == []
