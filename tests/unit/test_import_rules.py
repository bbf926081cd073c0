"""The layout's import rules, read from the source (no module is imported):
the protocol package imports none of the project; servers never import the
client package (nor the client the servers); the runtime imports no service;
the worker's layers import only the layers under them, by folder; pure modules
(the worker's whole analysis layer, and the others listed) import no gRPC,
OpenSlide, threads or clock, so they are tested fast and exhaustively."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Package name -> its folder.
FOLDERS = {
    "wsi_protocol": "wsi_protocol",
    "wsi_runtime": "wsi_runtime",
    "scheduler_service": "scheduler_service",
    "worker_service": "worker_service",
    "wsi_gateway": "gateway/wsi_gateway",
    "wsi_client": "clients/wsi_client",
    "wsi_training": "wsi_training",
}
PROJECT = tuple(FOLDERS)
SERVERS = ("scheduler_service", "worker_service", "wsi_gateway", "wsi_runtime")
PURE = (
    "scheduler_service/policy.py",
    "scheduler_service/validation.py",
    "scheduler_service/progress.py",
    "worker_service/analysis/tiling.py",
    "worker_service/analysis/merge.py",
    "worker_service/analysis/tissue.py",
    "worker_service/analysis/nuclei.py",
    "worker_service/analysis/morphology.py",
    "worker_service/analysis/shapes.py",
    "worker_service/analysis/tissue_codec.py",
    "scheduler_service/tissue_reuse.py",
    "worker_service/analysis/instances.py",
    "wsi_training/metrics.py",
    "wsi_runtime/job_params.py",
    "wsi_runtime/regions.py",
    "wsi_runtime/identity.py",
    "wsi_runtime/limits.py",
    "scheduler_service/page_tokens.py",
    "wsi_runtime/clipped.py",
    "clients/wsi_client/backoff.py",
    "clients/wsi_client/watch_cursor.py",
)
IMPURE = ("grpc", "openslide", "threading", "time", "asyncio", "socket", "subprocess")
SERVICES = ("scheduler_service", "worker_service", "wsi_gateway")

# The worker's layers (its subpackages) and the layers each may import. Modules
# at the package's top (errors.py, __main__.py) are the ground floor and the door.
WORKER = ROOT / "worker_service"
WORKER_LAYERS: dict[str, frozenset[str]] = {
    "analysis": frozenset(),
    "backends": frozenset({"analysis"}),
    "storage": frozenset({"analysis"}),
    "pipeline": frozenset({"analysis", "backends", "storage"}),
    "viewer": frozenset({"analysis", "storage"}),
    "server": frozenset({"analysis", "backends", "storage", "pipeline", "viewer"}),
}
TRAINING_MAY_IMPORT = frozenset({"analysis", "backends"})


def imports_of(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, as a dotted name."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def top(module: str) -> str:
    return module.split(".", 1)[0]


def sources(package: str) -> list[Path]:
    return sorted((ROOT / FOLDERS[package]).rglob("*.py"))


@pytest.mark.parametrize("package", PROJECT)
def test_every_package_has_sources(package: str) -> None:
    assert sources(package), f"{package} moved: update the rules here"


def test_the_protocol_imports_nothing_of_the_project() -> None:
    bad = [
        (str(p.relative_to(ROOT)), m)
        for p in sources("wsi_protocol")
        for m in imports_of(p)
        if top(m) in PROJECT and top(m) != "wsi_protocol"
    ]
    assert bad == []


@pytest.mark.parametrize("package", SERVERS)
def test_servers_do_not_import_the_client_package(package: str) -> None:
    bad = [
        (str(p.relative_to(ROOT)), m)
        for p in sources(package)
        for m in imports_of(p)
        if top(m) == "wsi_client"
    ]
    assert bad == []


def test_the_client_package_imports_no_server() -> None:
    bad = [
        (str(p.relative_to(ROOT)), m)
        for p in sources("wsi_client")
        for m in imports_of(p)
        if top(m) in SERVERS
    ]
    assert bad == []


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io_threads_or_clock(module: str) -> None:
    path = ROOT / module
    bad = [m for m in imports_of(path) if top(m) in IMPURE]
    assert bad == [], f"{module} imports {bad}"


def offenders(paths: Iterable[Path], found: Callable[[Path], list[str]]) -> dict[str, list[str]]:
    """Each file of ``paths`` with what ``found`` finds wrong in it, if anything."""
    return {str(p.relative_to(ROOT)): found(p) for p in sorted(paths) if found(p)}


def imports_in(path: Path, tops: Iterable[str]) -> list[str]:
    return [m for m in imports_of(path) if top(m) in tops]


def worker_layer_of(path: Path) -> str:
    """The layer a worker source file sits in ("" for the package's top)."""
    parts = path.relative_to(WORKER).parts
    return parts[0] if len(parts) > 1 else ""


def worker_layers_imported(path: Path) -> set[str]:
    """The worker layers ``path`` imports (``errors`` and the top as "")."""
    found = set()
    for module in imports_of(path):
        parts = module.split(".")
        if parts[0] == "worker_service":
            found.add(parts[1] if len(parts) > 1 and parts[1] in WORKER_LAYERS else "")
    return found


def layer_violations(path: Path, layer: str) -> list[str]:
    """What ``path``, in worker layer ``layer``, imports beyond what it may."""
    allowed = WORKER_LAYERS[layer] | {layer}
    imported = worker_layers_imported(path)
    if layer == "analysis":  # the ground of all: not even the worker's errors
        return sorted(imported - {layer})
    return sorted(imported - allowed - {""})


def test_the_worker_is_in_known_layers() -> None:
    layers = {worker_layer_of(p) for p in sources("worker_service") if "weights" not in p.parts}
    assert layers == {"", *WORKER_LAYERS}, "a new worker folder: give it a place in WORKER_LAYERS"


@pytest.mark.parametrize("layer", sorted(WORKER_LAYERS))
def test_worker_layers_import_only_the_layers_under_them(layer: str) -> None:
    files = (WORKER / layer).rglob("*.py")
    assert offenders(files, lambda p: layer_violations(p, layer)) == {}


def test_the_analysis_layer_is_pure() -> None:
    files = (WORKER / "analysis").rglob("*.py")
    assert offenders(files, lambda p: imports_in(p, IMPURE)) == {}


def test_training_uses_only_the_workers_analysis_and_backends() -> None:
    found = offenders(
        sources("wsi_training"), lambda p: sorted(worker_layers_imported(p) - TRAINING_MAY_IMPORT)
    )
    assert found == {}


ENVIRONMENT_READS = {"environ", "getenv", "environb", "getenvb"}


def environment_reads(path: Path) -> list[str]:
    """Where ``path`` reads the process environment: ``os.environ``,
    ``os.getenv`` or those names imported from ``os``."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENVIRONMENT_READS
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            found.append(f"line {node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [
                f"line {node.lineno}: from os import {alias.name}"
                for alias in node.names
                if alias.name in ENVIRONMENT_READS
            ]
    return found


# A program a job starts, in a process of its own: it may set its own
# library's environment before loading it (the nucleus table's writer).
PROGRAMS = {WORKER / "storage" / "parquet_writer.py"}


def job_code() -> list[Path]:
    """Everything a job runs in the worker and its pool: every worker layer
    but the server, and no program of its own."""
    return [
        p
        for layer in WORKER_LAYERS
        if layer != "server"
        for p in (WORKER / layer).rglob("*.py")
        if p not in PROGRAMS
    ]


def test_job_code_reads_no_environment() -> None:
    """Settings are the worker's flags, handed to jobs in their context."""
    assert offenders(job_code(), environment_reads) == {}


def test_the_runtime_imports_no_service() -> None:
    assert offenders(sources("wsi_runtime"), lambda p: imports_in(p, SERVICES)) == {}


def test_a_violation_is_seen(tmp_path: Path) -> None:
    """The reader of imports itself: a server file importing the client is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom wsi_client.client import SchedulerClient\nimport grpc.aio\n")
    assert list(imports_of(bad)) == ["os", "wsi_client.client", "grpc.aio"]


def test_the_layer_and_environment_readers_see_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\nfrom os import getenv\nfrom worker_service.pipeline import job\n"
        "from worker_service.server.servicer import WorkerServicer\n"
        "from worker_service import errors\nsize = os.environ.get('X')\n"
    )
    assert layer_violations(bad, "analysis") == ["", "pipeline", "server"]
    assert layer_violations(bad, "viewer") == ["pipeline", "server"]
    assert layer_violations(bad, "server") == []
    assert environment_reads(bad) == ["line 2: from os import getenv", "line 6: os.environ"]
