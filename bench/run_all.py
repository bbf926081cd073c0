"""``make bench``: every benchmark, one after the other, with the machine they ran on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys


def main() -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"# {platform.node()} ({machine}), Python {platform.python_version()}")
    for module in ("bench.policy_decisions", "bench.e2e_throughput", "bench.pipeline_bench"):
        print(f"\n## python -m {module}", flush=True)
        subprocess.run([sys.executable, "-m", module], check=True)


if __name__ == "__main__":
    main()
