"""Podman as the deploy tests call it: with the project's containers.conf,
skipped where podman is missing or the tests do not run as root."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from types import ModuleType

import pytest

from tests.harness import ROOT

IMAGE = "localhost/wsi:dev"
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "containers.conf")}
needs_podman = pytest.mark.skipif(
    shutil.which("podman") is None or os.geteuid() != 0,
    reason="needs podman, as root (make test installs it on CI)",
)


def image_built_by_make_test() -> bool:
    """Whether ``make test`` built IMAGE from this tree just before pytest
    (it passes the image's id): then the tests need not build it again."""
    built = os.environ.get("WSI_TEST_IMAGE_ID", "")
    if not built:
        return False
    found = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE],
        env=ENV,
        capture_output=True,
        text=True,
    )
    return found.returncode == 0 and found.stdout.strip() == built


def podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["podman", *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} ...: {done.stderr.strip()}")
    return done.stdout.strip()


def full_log(name: str) -> str:
    """A container's whole output, both streams."""
    done = subprocess.run(["podman", "logs", name], env=ENV, capture_output=True, text=True)
    return done.stdout + done.stderr


def logs(name: str) -> str:
    """The end of a container's output, headed by its name, for a failure's report."""
    return f"--- {name}\n{full_log(name)[-6000:]}"


def _play_local() -> ModuleType:
    """deploy/kubernetes/play_local.py, a script, imported as a module."""
    spec = importlib.util.spec_from_file_location(
        "play_local", ROOT / "deploy/kubernetes/play_local.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


play_local = _play_local()
