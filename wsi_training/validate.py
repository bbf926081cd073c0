"""The validation table of the model card: F1 (IoU > 0.5) and AJI per
held-out image and per folder, of each model file given and of the classical
segmenter, each image segmented at its own pixel size as a job on such a
slide would be (the model's input resampled to its 0.5 um/px and its classes
back; closer where the first look finds the nuclei small, as the worker
does). Optionally an outside check on images of another lab, never trained
on (CPM-15), reported per magnification.

    python -m wsi_training.validate --data DIR [DIR ...] [--outside CPM15_DIR]
        [--model worker_service/weights/nuclei_unet_int8.onnx ...] [--json OUT]
        [--own-pixel-size-only]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from worker_service.backends.learned import INT8_FILE, OnnxEngine
from wsi_training import data
from wsi_training.train import classical_scores, learned_scores

# CPM-15 gives magnifications, not pixel sizes: images 01-07 are 20x, 08-15 40x.
CPM15_20X = re.compile(r"CPM15_image0[1-7]$")


def outside_examples(folder: Path, model_mpp: float = data.MODEL_MPP) -> list[data.Example]:
    examples = []
    for path in sorted(folder.glob("*.jpg")):
        mpp = 0.5 if CPM15_20X.search(path.stem) else 0.25
        examples.append(data.example(path, source_mpp=mpp, model_mpp=model_mpp))
    if not examples:
        raise FileNotFoundError(f"no NAME.jpg with NAME.png in {folder}")
    return examples


def by_magnification(result: dict[str, Any], examples: list[data.Example]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for example in examples:
        key = "20x (0.5 um/px)" if example.source_mpp == 0.5 else "40x (0.25 um/px)"
        groups.setdefault(key, []).append(result["images"][example.name])
    return {
        key: {
            "images": len(rows),
            "f1": round(float(np.mean([r["f1"] for r in rows])), 4),
            "aji": round(float(np.mean([r["aji"] for r in rows])), 4),
        }
        for key, rows in sorted(groups.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    data.add_data_argument(parser)
    parser.add_argument("--outside", type=Path, help="a folder never trained on (CPM-15)")
    parser.add_argument("--model", type=Path, nargs="+", default=[INT8_FILE])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--model-mpp", type=float, default=data.MODEL_MPP, help="the models' pixel size, um/px"
    )
    parser.add_argument(
        "--own-pixel-size-only",
        action="store_true",
        help="never look closer at small nuclei (as the worker did before 2026-12-07)",
    )
    args = parser.parse_args()
    _, held_out = data.split(data.load(args.data, args.model_mpp))
    outside = outside_examples(args.outside, args.model_mpp) if args.outside else []
    segmenters: dict[str, Any] = {str(model): OnnxEngine(model) for model in args.model}
    report: dict[str, Any] = {}
    for name, engine in [*segmenters.items(), ("classical", None)]:

        def scored(examples: list[data.Example], engine: Any = engine) -> dict[str, Any]:
            if engine is None:
                return classical_scores(examples)
            return learned_scores(
                engine, examples, args.model_mpp, size_look=not args.own_pixel_size_only
            )

        entry: dict[str, Any] = {"held_out": scored(held_out)}
        if outside:
            entry["outside"] = scored(outside)
            entry["outside"]["magnifications"] = by_magnification(entry["outside"], outside)
        report[name] = entry
        print(summary_line(name, entry), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def summary_line(name: str, entry: dict[str, Any]) -> str:
    held = entry["held_out"]
    text = f"{name}: held-out F1 {held['f1']} AJI {held['aji']}"
    for folder, means in held["folders"].items():
        text += f"; {folder} {means['f1']} / {means['aji']}"
    if "outside" in entry:
        for key, means in entry["outside"]["magnifications"].items():
            text += f"; outside {key} {means['f1']} / {means['aji']}"
    return text


if __name__ == "__main__":
    main()
