"""``make bench``: every benchmark, one after the other, with the machine they ran on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys


def main() -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"# {platform.node()} ({machine}), Python {platform.python_version()}")
    for command in (
        ["bench.policy_decisions"],
        ["bench.e2e_throughput"],
        ["bench.pipeline_bench"],
        ["bench.segmenter_profile"],
        ["bench.pipeline_scaling"],
        ["bench.pipeline_ab", "--baseline", "c584a48"],  # before the segmenter of issue #14
        ["bench.backend_throughput"],
        ["bench.model_runtimes"],
    ):
        print(f"\n## python -m {' '.join(command)}", flush=True)
        subprocess.run([sys.executable, "-m", *command], check=True)


if __name__ == "__main__":
    main()
