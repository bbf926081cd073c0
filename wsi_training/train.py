"""Trains the learned backend's U-Net on the annotated nuclei and writes its
weights (PyTorch and ONNX) and a training log beside the worker:

    python -m wsi_training.train --data DIR [DIR ...] [--out DIR] [--steps 6000] [--device auto]

Seeds are fixed and the CPU run is deterministic, so the same command on the
same machine gives the same weights. `make train-model` runs the defaults."""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worker_service.analysis import nucleus_scale
from worker_service.analysis.instances import CLASSES, DISTANCE, HORIZONTAL, offsets_from_labels
from worker_service.analysis.nuclei import NucleusParams, segment_nuclei, stain_reference
from worker_service.backends.learned import (
    SPACE_TO_DEPTH,
    WIDTHS,
    LearnedSegmenter,
    centred,
    looking_mpp,
    padding_multiple,
    pixel_blocks,
    pixels_from_blocks,
)
from worker_service.backends.unet import OFFSET_OUTPUTS, OUTPUTS, Blocks, UNet
from wsi_training import data
from wsi_training.metrics import score

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "worker_service" / "weights"
CLASS_WEIGHTS = (1.0, 1.0, 2.0)  # the thin boundary class counts double
# The distance map's squared error against the classes' cross-entropy: both
# then move the weights about equally at the start of training.
DISTANCE_WEIGHT = 4.0
OFFSET_WEIGHT = 2.0  # of the offsets' squared error (two maps), when the model has them


class TrainingEngine:
    """The model being trained, as an engine of the learned backend: validation
    goes through the same padding and instances as the worker."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device
        self.space_to_depth: int = model.space_to_depth

    def logits(self, batch: np.ndarray) -> np.ndarray:
        blocks = pixel_blocks(batch, self.model.space_to_depth)
        tensor = torch.from_numpy(centred(blocks)).to(self.device)
        with torch.inference_mode():
            logits = self.model.blocks(tensor).cpu().numpy()
        return pixels_from_blocks(logits, self.model.space_to_depth)


Segment = Callable[[np.ndarray], np.ndarray]  # RGB to instance labels


def evaluate(
    examples: list[data.Example], segmenter_for: Callable[[data.Example], Segment]
) -> dict[str, Any]:
    """F1 and AJI of each example's segmenter on the image as annotated (at
    its own pixel size, as a job on such a slide sees it), their means per
    folder and overall."""
    rows = {
        e.name: asdict(score(e.source_labels, segmenter_for(e)(e.source_rgb))) for e in examples
    }
    folders = sorted({e.folder for e in examples})
    return {
        "images": rows,
        "folders": {
            folder: _means([rows[e.name] for e in examples if e.folder == folder])
            for folder in folders
        },
        **_means(list(rows.values())),
    }


def _means(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "f1": round(float(np.mean([r["f1"] for r in rows])), 4),
        "aji": round(float(np.mean([r["aji"] for r in rows])), 4),
    }


def learned_scores(
    engine: Any,
    examples: list[data.Example],
    model_mpp: float = data.MODEL_MPP,
    size_look: bool = True,
) -> dict[str, Any]:
    """The learned backend with ``engine``, resampling each image to the
    model's pixel size and the classes back, as the worker does; with
    ``size_look``, also as the worker does, looking closer at images whose
    nuclei the first look finds small (``learned.looking_mpp``)."""

    def segmenter_for(example: data.Example) -> Segment:
        mpp = example.source_mpp
        first = LearnedSegmenter(engine, tile_mpp=mpp, model_mpp=model_mpp)

        def segment(rgb: np.ndarray) -> np.ndarray:
            labels = first(rgb)
            if not size_look:
                return labels
            looking = looking_mpp(nucleus_scale.inner_areas(labels), mpp, model_mpp)
            if looking == model_mpp:
                return labels
            return LearnedSegmenter(engine, tile_mpp=mpp, model_mpp=looking)(rgb)

        return segment

    return evaluate(examples, segmenter_for)


def validate(
    model: nn.Module, examples: list[data.Example], device: torch.device, model_mpp: float
) -> dict[str, Any]:
    model.eval()
    result = learned_scores(TrainingEngine(model, device), examples, model_mpp)
    model.train()
    return result


def classical_scores(examples: list[data.Example]) -> dict[str, Any]:
    """The classical segmenter on the same images, its stain reference from
    each image itself (the pipeline takes it from the slide's tissue)."""

    def segmenter_for(example: data.Example) -> Segment:
        params = NucleusParams(mpp=example.source_mpp)

        def segment(rgb: np.ndarray) -> np.ndarray:
            labels: np.ndarray = segment_nuclei(rgb, stain_reference([rgb]), params)
            return labels

        return segment

    return evaluate(examples, segmenter_for)


def nucleus_dice_loss(outputs: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the nucleus pixels (interior or boundary) over the
    batch: it weighs a nucleus's outline by its area, where cross-entropy
    weighs every pixel alike, and so the large background matters less."""
    nucleus = 1 - torch.softmax(outputs[:, :CLASSES], dim=1)[:, 0]
    truth = (classes > 0).float()
    overlap = (nucleus * truth).sum()
    return 1 - (2 * overlap + 1) / (nucleus.sum() + truth.sum() + 1)


def offset_gradient_loss(
    predicted: torch.Tensor, offsets: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """HoVer-Net's: the squared error of the horizontal map's slope across x
    and the vertical's across y, inside nuclei, so that the maps fall as
    sharply as the truth's where two nuclei meet."""
    inside = (classes[:, 1:-1, 1:-1] > 0).float()

    def slopes(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        across_x = maps[:, 0, 1:-1, 2:] - maps[:, 0, 1:-1, :-2]
        across_y = maps[:, 1, 2:, 1:-1] - maps[:, 1, :-2, 1:-1]
        return across_x, across_y

    error = torch.zeros((), device=predicted.device)
    for slope, truth in zip(slopes(predicted), slopes(offsets), strict=True):
        error = error + ((slope - truth) ** 2 * inside).sum() / inside.sum().clamp(min=1)
    return error


def training_batch(
    training: list[data.Example],
    args: argparse.Namespace,
    rng: np.random.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``args.batch`` augmented crops of random training images: inputs,
    classes, distances and (``args.offsets``) offsets."""
    crops = [
        data.augmented_crop(
            training[int(rng.integers(len(training)))],
            args.crop,
            rng,
            args.scale_jitter,
            args.stain_jitter,
            args.soften,
            args.fade,
        )
        for _ in range(args.batch)
    ]
    inputs, classes, distances = (
        torch.from_numpy(np.stack([c[part] for c in crops])).to(device) for part in range(3)
    )
    offsets = None
    if args.offsets:
        offsets = torch.from_numpy(np.stack([offsets_from_labels(c[3]) for c in crops])).to(device)
    return inputs, classes, distances, offsets


def batch_loss(
    outputs: torch.Tensor,
    classes: torch.Tensor,
    distances: torch.Tensor,
    loss_fn: nn.Module,
    dice_weight: float,
    offsets: torch.Tensor | None = None,
    offset_gradient_weight: float = 0.0,
    distance_weight: float = DISTANCE_WEIGHT,
) -> torch.Tensor:
    """Cross-entropy of the classes, the distance map's squared error, the
    offsets' if given and, if weighted, the Dice loss of the nuclei."""
    loss = loss_fn(outputs[:, :CLASSES], classes) + distance_weight * nn.functional.mse_loss(
        torch.sigmoid(outputs[:, DISTANCE]), distances
    )
    if offsets is not None:
        predicted = torch.tanh(outputs[:, HORIZONTAL:])
        loss = loss + OFFSET_WEIGHT * nn.functional.mse_loss(predicted, offsets)
        if offset_gradient_weight:
            loss = loss + offset_gradient_weight * offset_gradient_loss(predicted, offsets, classes)
    if dice_weight:
        loss = loss + dice_weight * nucleus_dice_loss(outputs, classes)
    return loss


def train(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        if args.threads:
            torch.set_num_threads(args.threads)
    training, validation = data.split(data.load(args.data, args.model_mpp))
    model = UNet(args.widths, args.space_to_depth, outputs_of(args)).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=args.lr, total_steps=args.steps, pct_start=0.1
    )
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(CLASS_WEIGHTS, device=device))
    log: list[dict[str, Any]] = []
    started = time.perf_counter()
    running = 0.0
    for step in range(1, args.steps + 1):
        inputs, classes, distances, offsets = training_batch(training, args, rng, device)
        outputs = model(inputs)
        loss = batch_loss(
            outputs,
            classes,
            distances,
            loss_fn,
            args.dice_weight,
            offsets,
            args.offset_gradient_weight,
            args.distance_weight,
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running += float(loss.detach())
        if step % args.log_every == 0 or step == args.steps:
            entry: dict[str, Any] = {
                "step": step,
                "loss": round(running / args.log_every, 4),
                "seconds": round(time.perf_counter() - started, 1),
            }
            running = 0.0
            if step % args.validate_every == 0 or step == args.steps:
                scores = validate(model, validation, device, args.model_mpp)
                entry.update(val_f1=scores["f1"], val_aji=scores["aji"])
            log.append(entry)
            print(json.dumps(entry), flush=True)
    model.eval()
    final = validate(model, validation, device, args.model_mpp)
    return {
        "model": model,
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 1),
        "log": log,
        "validation": {"learned": final, "classical": classical_scores(validation)},
        "training_images": [e.name for e in training],
    }


def export(model: nn.Module, out: Path) -> dict[str, str]:
    """The weights for PyTorch (GPU) and as ONNX (CPU), in float32."""
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    weights = out / "nuclei_unet.pt"
    torch.save(model.state_dict(), weights)
    onnx_path = out / "nuclei_unet.onnx"
    blocks = 3 * model.space_to_depth**2
    example = torch.zeros(1, 32, 32, blocks)  # centred pixel_blocks, channels last
    torch.onnx.export(
        # In eval mode too: the exporter leaves the wrapper's mode on the model.
        Blocks(model).eval(),
        (example,),
        str(onnx_path),
        input_names=["rgb"],
        output_names=["logits"],
        dynamic_axes={"rgb": {0: "n", 1: "h", 2: "w"}, "logits": {0: "n", 1: "h", 2: "w"}},
        opset_version=17,
        dynamo=False,
    )
    return {"pytorch": weights.name, "onnx": onnx_path.name}


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """What the network learns and from what: losses, augmentation,
    architecture and pixel size (the model card's recipes differ only here)."""
    parser.add_argument(
        "--dice-weight", type=float, default=0.0, help="weight of a soft Dice loss of nuclei"
    )
    parser.add_argument(
        "--distance-weight",
        type=float,
        default=DISTANCE_WEIGHT,
        help="weight of the distance map's squared error (its peaks are the seeds)",
    )
    parser.add_argument(
        "--scale-jitter", type=float, default=data.SCALE_JITTER, help="crops scaled by 1/s to s"
    )
    parser.add_argument(
        "--stain-jitter", type=float, default=1.0, help="width of the colour jitter, 1 = default"
    )
    parser.add_argument(
        "--soften",
        type=float,
        default=0.0,
        help="share of crops shrunk by 1 to 2 and enlarged back (lower-magnification scans)",
    )
    parser.add_argument(
        "--fade",
        type=float,
        default=0.0,
        help="share of crops whose haematoxylin is scaled by 0.4 to 1 (faint nuclei)",
    )
    parser.add_argument(
        "--offsets",
        action="store_true",
        help="also learn each pixel's offset from its nucleus's centre (HoVer-Net's maps),"
        " which separate touching nuclei",
    )
    parser.add_argument(
        "--offset-gradient-weight",
        type=float,
        default=0.0,
        help="weight of the offsets' slope error inside nuclei (with --offsets)",
    )
    parser.add_argument(
        "--widths",
        type=lambda text: tuple(int(w) for w in text.split(",")),
        default=WIDTHS,
        help="channels at each scale, e.g. 16,32,64,128",
    )
    parser.add_argument(
        "--space-to-depth",
        type=int,
        default=SPACE_TO_DEPTH,
        help="pixel block the network works on",
    )
    parser.add_argument(
        "--model-mpp",
        type=float,
        default=data.MODEL_MPP,
        help="pixel size it learns at, um/px (the worker's model expects the default)",
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    data.add_data_argument(parser)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    _add_recipe_arguments(parser)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--validate-every", type=int, default=1000)
    args = parser.parse_args()
    multiple = padding_multiple(args.space_to_depth)
    if args.crop % multiple:
        parser.error(f"--crop must be a multiple of {multiple}")
    return args


def outputs_of(args: argparse.Namespace) -> int:
    return OFFSET_OUTPUTS if args.offsets else OUTPUTS


def training_record(
    args: argparse.Namespace, result: dict[str, Any], files: dict[str, str]
) -> dict[str, Any]:
    """What training_log.json keeps: how to run it again, where, and the result."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    flags = " ".join(
        f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, tuple) else v}"
        for k, v in vars(args).items()
        if k not in ("data", "out")
    )
    network = UNet(args.widths, args.space_to_depth, outputs_of(args))
    return {
        "command": f"python -m wsi_training.train {flags}",
        "commit": commit,
        "machine": f"{platform.node()} {platform.machine()}, torch {torch.__version__}",
        "architecture": {
            "name": "UNet",
            "widths": list(args.widths),
            "space_to_depth": args.space_to_depth,
            "outputs": outputs_of(args),
            "parameters": sum(p.numel() for p in network.parameters()),
        },
        "model_mpp": args.model_mpp,
        "files": files,
        **result,
    }


def main() -> None:
    args = parse_args()
    log_path = args.out / "training_log.json"
    before = json.loads(log_path.read_text()) if log_path.is_file() else None
    result = train(args)
    files = export(result.pop("model"), args.out)
    record = training_record(args, result, files)
    log_path.write_text(json.dumps(record, indent=2) + "\n")
    learned, classical = record["validation"]["learned"], record["validation"]["classical"]
    print(
        f"validation F1 / AJI: learned {learned['f1']} / {learned['aji']},"
        f" classical {classical['f1']} / {classical['aji']} ({math.ceil(record['seconds'])} s)"
    )
    if before is not None:  # the weights this run replaced: does it reproduce them?
        old = before["validation"]["learned"]
        print(
            f"the weights replaced had F1 / AJI {old['f1']} / {old['aji']}:"
            f" AJI differs by {abs(learned['aji'] - old['aji']):.4f}"
        )


if __name__ == "__main__":
    main()
