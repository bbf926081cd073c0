"""Flags with environment defaults: every setting ``--foo-bar`` can also be given
as ``WSI_FOO_BAR``; a flag wins over the environment."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

DEFAULT_SLIDE_ROOT = Path("slides")


def env_name(flag: str) -> str:
    """``--foo-bar`` -> ``WSI_FOO_BAR``."""
    return "WSI_" + flag.lstrip("-").replace("-", "_").upper()


def add(parser: argparse.ArgumentParser, flag: str, default: Any, help: str, **kw: Any) -> None:
    env = env_name(flag)
    kind = kw.pop("type", type(default) if default is not None else str)
    raw = os.environ.get(env)
    value = kind(raw) if raw not in (None, "") else default
    parser.add_argument(flag, type=kind, default=value, help=f"{help} [env {env}]", **kw)


TRUE_WORDS = ("1", "true", "yes", "on")


def add_switch(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """An on/off setting: the flag, or ``WSI_…=1`` (true, yes, on) in the environment."""
    env = env_name(flag)
    default = os.environ.get(env, "").strip().lower() in TRUE_WORDS
    parser.add_argument(flag, action="store_true", default=default, help=f"{help} [env {env}=1]")


def path_list(value: str) -> list[Path]:
    return [Path(p) for p in value.split(":") if p]


def add_common(parser: argparse.ArgumentParser, grace: float) -> None:
    """The settings every server has."""
    add(parser, "--host", "127.0.0.1", "address to bind")
    add(
        parser,
        "--slide-roots",
        [DEFAULT_SLIDE_ROOT],
        "colon-separated folders slides may be read from",
        type=path_list,
    )
    add(parser, "--grace", grace, "seconds in-flight calls get on shutdown")
    add(parser, "--max-request-mb", 4.0, "largest gRPC request accepted, MB")
    add_logging(parser)


def add_logging(parser: argparse.ArgumentParser) -> None:
    add(parser, "--log-level", "INFO", "logging level")
    add(
        parser,
        "--log-format",
        "text",
        "text, or json: one JSON object per line",
        choices=("text", "json"),
    )


def add_metrics(parser: argparse.ArgumentParser, port: int) -> None:
    add(parser, "--metrics-port", port, "Prometheus /metrics port (0: pick a free one, -1: off)")
