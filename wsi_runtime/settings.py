"""Flags with environment defaults: every setting ``--foo-bar`` can also be given
as ``WSI_FOO_BAR``; a flag wins over the environment."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def add(parser: argparse.ArgumentParser, flag: str, default: Any, help: str, **kw: Any) -> None:
    env_name = "WSI_" + flag.lstrip("-").replace("-", "_").upper()
    kind = kw.pop("type", type(default) if default is not None else str)
    raw = os.environ.get(env_name)
    value = kind(raw) if raw not in (None, "") else default
    parser.add_argument(flag, type=kind, default=value, help=f"{help} [env {env_name}]", **kw)


def path_list(value: str) -> list[Path]:
    return [Path(p) for p in value.split(":") if p]


def address(host: str, port: int) -> str:
    return f"{host}:{port}"
