"""The import rules of the chat pipeline and of the routers, read from the source with ast
(nothing is imported).

The pipeline's contract (:mod:`app.orchestrator.turn`) is what feature packages import; the
pipeline that runs it (:mod:`app.orchestrator.service`) is imported only by the code that wires
the app, so the arrows point from the pipeline to the features and never back up. Routers call
services handed out by app/deps.py: none imports another router or reads the app's state.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"

SERVICE = "app.orchestrator.service"
STAGES = "app.orchestrator.stages"
# The wiring: the lifespan builds the Orchestrator, main builds the app, deps hands the
# Orchestrator to the routes, and the routes (the wire faces) call it.
WIRING = ("app/lifespan.py", "app/main.py", "app/deps.py", "app/api/")
FEATURES = ("app/memory/", "app/routing/", "app/agents/", "app/tools/")


def imported_modules(path: Path, root: Path = ROOT) -> Iterator[str]:
    """Every module ``path`` imports, absolute, including ``from app.orchestrator import service``
    (as ``app.orchestrator.service``) and imports under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


def app_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(APP.rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path


def importers_of(module: str) -> set[str]:
    return {rel for rel, path in app_modules() if module in set(imported_modules(path))}


def test_only_the_wiring_imports_the_pipeline_service() -> None:
    offenders = {
        rel for rel in importers_of(SERVICE) if not rel.startswith("app/orchestrator/") and not rel.startswith(WIRING)
    }
    assert not offenders, f"import the contract from app.orchestrator.turn instead of {SERVICE}: {sorted(offenders)}"


def test_feature_packages_import_the_contract_only() -> None:
    """Memory, routing, agents and tools may know the contract, never the pipeline or its assembly."""
    offenders: dict[str, list[str]] = {}
    for rel, path in app_modules():
        if not rel.startswith(FEATURES):
            continue
        wrong = sorted(
            {
                name
                for name in imported_modules(path)
                if name.startswith("app.orchestrator") and not name.startswith(("app.orchestrator.turn",))
            }
            - {"app.orchestrator"}
        )
        if wrong:
            offenders[rel] = wrong
    assert not offenders, offenders


def test_the_tool_loop_wraps_a_generator_without_the_pipeline() -> None:
    assert SERVICE not in set(imported_modules(APP / "orchestrator" / "tool_loop.py"))


def test_the_contract_imports_nothing_of_the_pipeline_or_the_features() -> None:
    """turn.py is dataclasses and Protocols: importing it pulls in no service, stage or store."""
    names = set(imported_modules(APP / "orchestrator" / "turn.py"))
    forbidden = {SERVICE, STAGES, "app.orchestrator.tool_loop"}
    assert not names & forbidden
    assert not {name for name in names if name.startswith(tuple(f.replace("/", ".") for f in FEATURES))}


def test_the_stages_are_assembled_in_one_place() -> None:
    """Only the lifespan assembles the pipeline, through app.orchestrator.stages."""
    assert importers_of(STAGES) == {"app/lifespan.py"}


def test_the_walk_sees_every_form_of_import(tmp_path: Path) -> None:
    """The rule above can fail: each way of writing the forbidden import is found."""
    (tmp_path / "app" / "memory").mkdir(parents=True)
    forms = [
        "from app.orchestrator.service import Turn",
        "from app.orchestrator import service",
        "import app.orchestrator.service",
        "from ..orchestrator.service import Turn",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.orchestrator.service import Turn",
    ]
    for index, source in enumerate(forms):
        path = tmp_path / "app" / "memory" / f"m{index}.py"
        path.write_text(source + "\n")
        assert SERVICE in set(imported_modules(path, tmp_path)), source


# The routers (one per resource or wire face) and the helpers they share.
API = APP / "api"
ROUTER_HELPERS = frozenset({"__init__", "body", "errors", "openapi"})


def routers() -> list[Path]:
    return sorted(path for path in API.glob("*.py") if path.stem not in ROUTER_HELPERS)


def test_there_are_routers_to_check() -> None:
    names = {path.stem for path in routers()}
    assert {"chat", "tools", "memory", "review", "agents"} <= names, names


def test_no_router_imports_another_router() -> None:
    """What two routers share lives in a service or in app/deps.py, never in a router."""
    router_modules = {f"app.api.{path.stem}" for path in routers()}
    offenders: dict[str, list[str]] = {}
    for path in routers():
        own = f"app.api.{path.stem}"
        wrong = sorted(
            name
            for name in set(imported_modules(path))
            if name != own and any(name == other or name.startswith(other + ".") for other in router_modules)
        )
        if wrong:
            offenders[path.relative_to(ROOT).as_posix()] = wrong
    assert not offenders, offenders


def _state_reads(path: Path) -> list[str]:
    """``<x>.app.state``, ``<x>.orch`` and ``getattr(<x>, "orch")`` in a module: reaching into the
    app's state directly."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            if any(isinstance(arg, ast.Constant) and arg.value in ("orch", "state") for arg in node.args[1:2]):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
            continue
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr == "orch" or (
            node.attr == "state" and isinstance(node.value, ast.Attribute) and node.value.attr == "app"
        ):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_router_reads_the_app_state_directly() -> None:
    """Routers take services through the app/deps.py aliases (ToolsDep, MemoryDep, ...)."""
    offenders = {path.relative_to(ROOT).as_posix(): found for path in routers() if (found := _state_reads(path))}
    assert not offenders, offenders


def test_observability_does_not_reach_into_the_app_state() -> None:
    """The middleware is handed what it needs (the token check) by create_app."""
    offenders = {
        path.relative_to(ROOT).as_posix(): found
        for path in sorted((APP / "observability").glob("*.py"))
        if (found := _state_reads(path))
    }
    assert not offenders, offenders


def test_the_state_reader_finds_a_direct_read(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f(request, scope):\n"
        "    getattr(getattr(scope['app'], 'state', None), 'orch', None)\n"
        "    return request.app.state.orch.routing.active\n"
    )
    assert len(_state_reads(probe)) == 4
