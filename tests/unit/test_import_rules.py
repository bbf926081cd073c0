"""The layout's import rules, read from the source (no module is imported):
the protocol package imports none of the project; servers never import the
client package (nor the client the servers); pure modules import no gRPC,
OpenSlide, threads or clock, so they are tested fast and exhaustively."""

from __future__ import annotations

import ast
from collections.abc import Iterator
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
    "worker_service/tiling.py",
    "worker_service/merge.py",
    "worker_service/tissue.py",
    "worker_service/nuclei.py",
    "worker_service/morphology.py",
    "worker_service/shapes.py",
    "worker_service/tissue_codec.py",
    "scheduler_service/tissue_reuse.py",
    "worker_service/instances.py",
    "wsi_training/metrics.py",
    "wsi_runtime/job_params.py",
    "wsi_runtime/identity.py",
    "wsi_runtime/limits.py",
    "scheduler_service/page_tokens.py",
    "clients/wsi_client/backoff.py",
    "clients/wsi_client/watch_cursor.py",
)
IMPURE = ("grpc", "openslide", "threading", "time", "asyncio", "socket", "subprocess")


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


def test_a_violation_is_seen(tmp_path: Path) -> None:
    """The reader of imports itself: a server file importing the client is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom wsi_client.client import SchedulerClient\nimport grpc.aio\n")
    assert list(imports_of(bad)) == ["os", "wsi_client.client", "grpc.aio"]
