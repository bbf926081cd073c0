"""The learned backend on a GPU, in one run (the GPU point of the learned
model's issue): what a session lent a GPU machine runs once, through
``bench/gpu_check.sh``, which installs what that machine lacks.

1. agreement: the worker's PyTorch engine on ``--device`` (float16 on a GPU)
   against ONNX Runtime on the CPU (float32 and the 8-bit model that CPU
   workers run), on the tissue tiles of CMU-1-Small-Region: logits, and
   nuclei matched at IoU > 0.5; and on one 4096 px tile, whose nucleus label
   ids run past 2,048 (float16 holds integers exactly only up to 2,048: the
   ids must come out 1..N, as on the CPU);
2. model only: the engine's logits per second, tiles to logits and back to
   the host, at several batch sizes; the whole segmenter (model, instances,
   outlines) in one process;
3. whole job: a CELL_SEGMENTATION job of the generated 320 MP slide through
   the services, the worker on ``--device`` with every core, against the
   same job on the CPU (8-bit ONNX Runtime) and ``backend=classical``,
   alternating each round; the GPU's utilisation sampled (nvidia-smi) while
   the GPU job runs: near 100 % the model is the bottleneck, low the CPU's
   post-processing is.

    python -m bench.gpu_check [--device cuda] [--megapixels 320] [--rounds 3] [--json OUT]

Without a GPU, ``--device cpu`` runs the same code (PyTorch in float32),
which is how it is checked before a GPU machine is lent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from bench.backend_throughput import megapixels_per_second
from bench.pipeline_ab import alternating
from bench.pipeline_bench import OUT, through_services
from bench.segmenter_profile import tissue_tiles
from bench.slide_generator import slide_path
from worker_service.backends import learned
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_training.metrics import score

LARGE_TILE = 4096  # its nuclei number several thousand
FLOAT16_EXACT = 2048  # the largest integer run of float16


def environment(device: str) -> dict[str, Any]:
    import onnxruntime
    import torch

    found: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "device": device,
    }
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(torch.device(device))
        found["gpu"] = f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB"
    return found


def mosaic(tiles: list[npt.NDArray[np.uint8]], side: int) -> npt.NDArray[np.uint8]:
    """One ``side`` px tile made of the tissue tiles side by side, repeated."""
    size = tiles[0].shape[0]
    per_row = side // size
    rows = [
        np.hstack([tiles[(row * per_row + col) % len(tiles)] for col in range(per_row)])
        for row in range(per_row)
    ]
    image: npt.NDArray[np.uint8] = np.ascontiguousarray(np.vstack(rows))
    return image


def ids_are_one_to_n(labels: npt.NDArray[np.int32]) -> bool:
    ids = np.unique(labels)
    return bool(np.array_equal(ids, np.arange(len(ids))))


def agreement(tiles: list[npt.NDArray[np.uint8]], device: str) -> dict[str, Any]:
    engines: dict[str, learned.Engine] = {
        "torch": learned.TorchEngine(device),
        "onnx-float32": learned.OnnxEngine(learned.ONNX_FILE),
        "onnx-int8": learned.OnnxEngine(learned.INT8_FILE),
    }
    batch = np.stack([learned.model_input(t) for t in tiles])
    logits = {name: engine.logits(batch) for name, engine in engines.items()}
    difference = np.abs(logits["torch"] - logits["onnx-float32"])
    segmenters = {name: learned.LearnedSegmenter(engine) for name, engine in engines.items()}
    labels = {name: [s(t) for t in tiles] for name, s in segmenters.items()}
    large = mosaic(tiles, LARGE_TILE)
    large_labels = {name: segmenters[name](large) for name in ("torch", "onnx-float32")}
    return {
        "tiles": f"{len(tiles)} x {tiles[0].shape[0]} px",
        "logits_vs_onnx_float32": {
            "max_abs": round(float(difference.max()), 5),
            "p99_9_abs": round(float(np.percentile(difference, 99.9)), 5),
        },
        "nuclei": {name: sum(int(x.max()) for x in found) for name, found in labels.items()},
        "f1_vs": {
            other: _mean_f1(labels[other], labels["torch"])
            for other in ("onnx-float32", "onnx-int8")
        },
        "large_tile": {
            "side_px": LARGE_TILE,
            "nuclei": {name: int(x.max()) for name, x in large_labels.items()},
            "ids_past_float16_exact": bool(large_labels["torch"].max() > FLOAT16_EXACT),
            "ids_one_to_n": {name: ids_are_one_to_n(x) for name, x in large_labels.items()},
            "f1_vs_onnx_float32": score(large_labels["onnx-float32"], large_labels["torch"]).f1,
        },
    }


def _mean_f1(truth: list[npt.NDArray[np.int32]], found: list[npt.NDArray[np.int32]]) -> float:
    return round(statistics.mean(score(t, f).f1 for t, f in zip(truth, found, strict=True)), 4)


def model_only(
    tiles: list[npt.NDArray[np.uint8]], device: str, batches: list[int], passes: int
) -> dict[str, float]:
    """MP/s of the model alone (its inputs to logits on the host) and of the
    whole segmenter in one process, per batch size."""
    engine = learned.TorchEngine(device)
    segmenter = learned.LearnedSegmenter(engine)
    rates: dict[str, float] = {}
    for batch in batches:
        chosen = [tiles[i % len(tiles)] for i in range(max(batch, len(tiles)))]
        inputs = [learned.model_input(t) for t in chosen]
        rates[f"model batch {batch}"] = megapixels_per_second(
            lambda part: engine.logits(np.stack(part)), inputs, batch, passes
        )[0]
        rates[f"segmenter (one process) batch {batch}"] = megapixels_per_second(
            segmenter.find, chosen, batch, passes
        )[0]
    return rates


@contextmanager
def gpu_utilisation() -> Iterator[list[tuple[float, float]]]:
    """(GPU %, memory MiB) every 100 ms while the block runs, from nvidia-smi;
    none where there is no nvidia-smi."""
    samples: list[tuple[float, float]] = []
    command = shutil.which("nvidia-smi")
    if command is None:
        yield samples
        return
    query = [command, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
    process = subprocess.Popen([*query, "-lms", "100"], stdout=subprocess.PIPE, text=True)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            sample = parse_sample(line)
            if sample is not None:
                samples.append(sample)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield samples
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=10)


def parse_sample(line: str) -> tuple[float, float] | None:
    """(GPU %, memory MiB) of one nvidia-smi CSV line; None for what is not
    a reading (``[N/A]``, ``[Not Supported]``, a cut line)."""
    parts = [part.strip() for part in line.split(",")]
    try:
        busy, memory = (float(part) for part in parts)
    except ValueError:
        return None
    return busy, memory


def utilisation_summary(samples: list[tuple[float, float]]) -> dict[str, float] | None:
    if not samples:
        return None
    busy = [s[0] for s in samples]
    return {
        "samples": len(samples),
        "median_pct": statistics.median(busy),
        "mean_pct": round(statistics.mean(busy), 1),
        "share_over_50_pct": round(sum(b > 50 for b in busy) / len(busy), 3),
        "peak_memory_mib": max(s[1] for s in samples),
    }


def whole_job(device: str, megapixels: float, rounds: int) -> dict[str, Any]:
    slide = slide_path(OUT, megapixels, mpp=0.5)
    cores = str(os.cpu_count() or 1)
    sides: dict[str, tuple[dict[str, str], str]] = {  # job params, the worker's model device
        f"default job, model on {device}": ({}, device),
        "default job, CPU only": ({}, "cpu"),
        "backend=classical": ({"backend": "classical"}, "cpu"),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for number, name in enumerate(alternating(list(sides), rounds)):
            params, model_device = sides[name]
            with gpu_utilisation() as samples:
                run = through_services(
                    slide,
                    pb.CELL_SEGMENTATION,
                    Path(tmp) / str(number),
                    params=params,
                    model_device=model_device,
                    processes=cores,
                )
            run["gpu"] = utilisation_summary(samples)
            run.pop("files", None)
            runs[name].append(run)
            print(json.dumps({name: _brief(run)}), flush=True)
    return {
        "slide": f"{slide.name}, {megapixels:g} MP at 0.5 um/px",
        "processes": int(cores),
        "median_seconds": {
            name: round(statistics.median(r["seconds"] for r in done), 2)
            for name, done in runs.items()
        },
        "runs": runs,
    }


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in ("seconds", "cpu_seconds", "nuclei", "gpu") if k in run}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (a dry run)")
    parser.add_argument("--megapixels", type=float, default=320)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--skip-job", action="store_true", help="agreement and model only")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    tiles = tissue_tiles()
    report: dict[str, Any] = {"environment": environment(args.device)}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("agreement", lambda: agreement(tiles, args.device)),
        (
            "model_only_mp_per_s",
            lambda: model_only(
                tiles, args.device, [int(b) for b in args.batches.split(",")], args.passes
            ),
        ),
    ]
    if not args.skip_job:
        steps.append(("whole_job", lambda: whole_job(args.device, args.megapixels, args.rounds)))
    for name, step in steps:
        started = time.perf_counter()
        report[name] = step()
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        if args.json:  # what is done so far survives a run cut short
            with open(args.json, "w") as out:
                json.dump(report, out, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
