"""The learned model's network alone, one thread, one 512 px tile per pass
(256 x 256 pixel blocks of 12 channels, as the worker feeds it), in each
runtime there is on this machine: ONNX Runtime in 8 bits (the CPU default)
and float32, and OpenVINO (not a dependency: measured where it is
installed) on the same files in 8 bits, float32 and bfloat16. Prints the
CPU's instruction sets that decide 8-bit and bfloat16 speed (AVX2,
AVX-512, VNNI, AMX), so that runs on different machines can be told apart.

    python -m bench.model_runtimes [--passes 50]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from worker_service.backends.learned import INT8_FILE, ONNX_FILE, OnnxEngine

TILE = 512
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8")


def cpu_flags() -> list[str]:
    """The ISA_FLAGS this CPU has (Linux), in that order."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((row for row in text.splitlines() if row.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [flag for flag in ISA_FLAGS if flag in have]


def median_ms(run: Callable[[], object], passes: int) -> float:
    for _ in range(5):
        run()
    times = []
    for _ in range(passes):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def _engine_run(engine: OnnxEngine, feed: Any) -> Callable[[], Any]:
    return lambda: engine.block_logits(feed)


def _openvino_run(request: Any, x: Any) -> Callable[[], Any]:
    return lambda: request.infer({0: x})[0].copy()


def _max_difference(out: Any, reference: dict[str, Any], label: str) -> float:
    """Against ONNX Runtime on the same file (logits have a spread of about 1)."""
    return float(np.abs(out - reference["int8" if "int8" in label else "float"]).max())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--passes", type=int, default=50)
    args = parser.parse_args()
    blocks = np.random.default_rng(0).integers(0, 256, (1, TILE // 2, TILE // 2, 12), np.uint8)
    # The worker's own engines: their sessions (one thread) and the input each
    # graph takes (the 8-bit one: the bytes quantised by the worker's table).
    engines = {
        "onnxruntime int8": OnnxEngine(INT8_FILE),
        "onnxruntime float32": OnnxEngine(ONNX_FILE),
    }
    inputs = {
        INT8_FILE: engines["onnxruntime int8"].feed(blocks),
        ONNX_FILE: engines["onnxruntime float32"].feed(blocks),
    }
    runs: dict[str, Callable[[], Any]] = {
        label: _engine_run(engine, inputs[INT8_FILE if "int8" in label else ONNX_FILE])
        for label, engine in engines.items()
    }
    if importlib.util.find_spec("openvino") is not None:
        import openvino  # type: ignore[import-not-found]

        core = openvino.Core()
        for label, path, precision in (
            ("openvino int8", INT8_FILE, "f32"),
            ("openvino float32", ONNX_FILE, "f32"),
            ("openvino bfloat16", ONNX_FILE, "bf16"),
        ):
            model = core.read_model(str(path))
            model.reshape({"rgb": list(inputs[path].shape)})
            compiled = core.compile_model(
                model,
                "CPU",
                {
                    "INFERENCE_NUM_THREADS": 1,
                    "NUM_STREAMS": 1,
                    "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_PRECISION_HINT": precision,
                },
            )
            runs[label] = _openvino_run(compiled.create_infer_request(), inputs[path])
    timings = {label: median_ms(run, args.passes) for label, run in runs.items()}
    reference = {"int8": runs["onnxruntime int8"](), "float": runs["onnxruntime float32"]()}
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "isa": cpu_flags(),
        "onnxruntime": onnxruntime.__version__,
        "ms_per_tile": timings,
        "mp_per_s_per_core": {
            label: round(TILE * TILE / 1e6 / (ms / 1000), 2) for label, ms in timings.items()
        },
        "max_abs_logit_difference_from_onnxruntime": {
            label: float(f"{_max_difference(runs[label](), reference, label):.3g}")
            for label in runs
            if label.startswith("openvino")
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
