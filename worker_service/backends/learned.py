"""The ``learned`` backend: the project's own nucleus U-Net (trained by
``wsi_training``, weights shipped in ``worker_service/weights/``), run on
batches of tiles. On a CPU through ONNX Runtime, one thread per pool process
(the pool is the parallelism); on a GPU through PyTorch in float16. Its
outputs (three class logits and a distance logit) become labelled nuclei in
``analysis/instances.py``."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from worker_service.analysis import nucleus_scale
from worker_service.analysis.instances import InstanceParams, labels_from_logits, seeds_from_logits
from worker_service.analysis.nuclei import RGB, Labels
from worker_service.analysis.tiling import PIXEL_SIZE_TOLERANCE
from worker_service.backends.base import (
    Backend,
    BatchedModel,
    JobSlide,
    ModelSettings,
    Prepared,
    Recipe,
    SizeLook,
    model_batching,
)
from worker_service.errors import BackendUnavailable

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
ONNX_FILE = WEIGHTS / "nuclei_unet.onnx"
INT8_FILE = WEIGHTS / "nuclei_unet_int8.onnx"  # quantised (wsi_training.quantise): CPUs
TORCH_FILE = WEIGHTS / "nuclei_unet.pt"
LEARNED_MPP = 0.5  # the pixel size it was trained at (wsi_training.data.MODEL_MPP)
WIDTHS = (16, 32, 64, 128)  # the U-Net's channels at each of its scales (unet.py)
SPACE_TO_DEPTH = 2  # it works on 2 x 2 blocks of pixels (unet.py)
# Input sides are padded to multiples of this (the blocks, then the poolings).
MULTIPLE = SPACE_TO_DEPTH * 2 ** (len(WIDTHS) - 1)  # padding_multiple(SPACE_TO_DEPTH)


PixelBlocks = npt.NDArray[np.uint8]  # (N, H/s, W/s, 3 s^2): pixel_blocks


class Engine(Protocol):
    space_to_depth: int  # the pixel blocks its network works on

    def logits(self, batch: RGB) -> npt.NDArray[np.float32]:
        """(N, 4, H, W) logits of a batch of ``model_input``, (N, H, W, 3)."""
        ...


class OnnxEngine:
    """A graph whose input is float (``centred`` pixel blocks) or, for the
    8-bit one, their quantised bytes: ``wsi_training.quantise`` moved the input's
    quantisation out of the graph, and its scale and zero point into the
    file's metadata, so that each pixel value is quantised once, by a table,
    instead of each pixel of each tile converted to float and back."""

    def __init__(self, model: Path = INT8_FILE, threads: int = 1) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        self._table: npt.NDArray[np.uint8] | None = None
        source = self._session.get_inputs()[0]
        # Each block's 3 s^2 bytes are the input's channels (its last axis).
        self.space_to_depth = round(math.sqrt(int(source.shape[-1]) / 3))
        if source.type == "tensor(uint8)":
            metadata = self._session.get_modelmeta().custom_metadata_map
            self._table = quantised(
                centred(np.arange(256, dtype=np.uint8)),
                float(metadata[INPUT_SCALE]),
                int(metadata[INPUT_ZERO_POINT]),
            )

    def logits(self, batch: RGB) -> npt.NDArray[np.float32]:
        blocks = pixel_blocks(batch, self.space_to_depth)
        return pixels_from_blocks(self.block_logits(self.feed(blocks)), self.space_to_depth)

    def feed(self, blocks: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
        """What the graph takes for these pixel blocks: centred floats, or
        for the 8-bit graph their quantised bytes."""
        if self._table is None:
            return centred(blocks)
        rows = blocks.reshape(-1, blocks.shape[-2] * blocks.shape[-1])
        quantised_blocks: npt.NDArray[np.uint8] = cv2.LUT(rows, self._table).reshape(blocks.shape)
        return quantised_blocks

    def block_logits(self, feed: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """The network alone, on a ``feed``."""
        (out,) = self._session.run(None, {"rgb": feed})
        return out  # type: ignore[no-any-return]


# Metadata of the 8-bit graph: the quantisation of its (centred) input.
INPUT_SCALE, INPUT_ZERO_POINT = "input_scale", "input_zero_point"


def quantised(
    values: npt.NDArray[np.float32], scale: float, zero_point: int
) -> npt.NDArray[np.uint8]:
    """ONNX QuantizeLinear to uint8: round half to even of value / scale (in
    float32, as ONNX Runtime divides), plus the zero point, clipped."""
    steps = np.rint(values / np.float32(scale)) + zero_point
    result: npt.NDArray[np.uint8] = np.clip(steps, 0, 255).astype(np.uint8)
    return result


class TorchEngine:
    def __init__(self, device: str, weights: Path = TORCH_FILE) -> None:
        import torch

        from worker_service.backends.unet import UNet

        self._torch: Any = torch
        self.device = torch.device(device)
        self.half = self.device.type == "cuda"
        state = torch.load(weights, map_location="cpu", weights_only=True)
        # Its blocks, widths and maps per pixel, as the weights' layers hold them.
        self.space_to_depth = round(math.sqrt(state["stem.0.weight"].shape[1] / 3))
        widths = [state["stem.0.weight"].shape[0]]
        while f"down.{len(widths) - 1}.0.0.weight" in state:
            widths.append(state[f"down.{len(widths) - 1}.0.0.weight"].shape[0])
        outputs = state["head.weight"].shape[0] // self.space_to_depth**2
        model = UNet(tuple(widths), self.space_to_depth, outputs)
        model.load_state_dict(state)
        model = model.eval().to(self.device)
        self._model = model.half() if self.half else model

    def logits(self, batch: RGB) -> npt.NDArray[np.float32]:
        torch = self._torch
        blocks = pixel_blocks(batch, self.space_to_depth)
        tensor = torch.from_numpy(centred(blocks)).to(self.device)
        if self.half:
            tensor = tensor.half()
        with torch.inference_mode():
            logits = self._model.blocks(tensor).float().cpu().numpy()
        return pixels_from_blocks(logits, self.space_to_depth)


NVIDIA_DRIVER = (Path("/proc/driver/nvidia/version"), Path("/dev/nvidiactl"))


def cuda_present() -> bool:
    """Whether PyTorch is installed and sees a CUDA device (without importing
    PyTorch, a few hundred MB, on a machine with no NVIDIA driver)."""
    if not any(path.exists() for path in NVIDIA_DRIVER):
        return False
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_engine(engine: str, device: str) -> tuple[str, str]:
    """What ``engine`` and ``device`` (the worker's flags) run as here:
    (onnx-int8 | onnx | torch, cpu | cuda[:N]). ``device`` auto is cuda when
    PyTorch sees one and the engine allows it; ``engine`` auto is the 8-bit
    model through ONNX Runtime on a CPU, PyTorch in float16 on a GPU."""
    if device == "auto":
        device = "cuda" if engine in ("auto", "torch") and cuda_present() else "cpu"
    if device.startswith("cuda"):
        if engine.startswith("onnx"):
            raise BackendUnavailable("the learned backend runs on a GPU through PyTorch only")
        if not cuda_present():
            raise BackendUnavailable(f"device {device}: PyTorch sees no CUDA device on this worker")
        return "torch", device
    if engine == "torch":
        if importlib.util.find_spec("torch") is None:
            raise BackendUnavailable("engine torch needs PyTorch: pip install 'wsi-scheduler[gpu]'")
        return "torch", "cpu"
    return ("onnx" if engine == "onnx" else "onnx-int8"), "cpu"


def make_engine(engine: str, device: str) -> Engine:
    name, device = resolve_engine(engine, device)
    if name == "torch":
        return TorchEngine(device)
    return OnnxEngine(ONNX_FILE if name == "onnx" else INT8_FILE)


def engine_details(engine: str, device: str) -> dict[str, object]:
    """The summary's account of what ran: engine, precision, runtime, device."""
    name, device = resolve_engine(engine, device)
    if name == "torch":
        import torch

        precision = "float16" if device.startswith("cuda") else "float32"
        runtime = f"PyTorch {torch.__version__}"
    else:
        import onnxruntime

        precision = "int8" if name == "onnx-int8" else "float32"
        runtime = f"ONNX Runtime {onnxruntime.__version__}"
    return {"engine": name, "precision": precision, "runtime": runtime, "device": device}


SIZE_SAMPLE_TILES = 8  # tissue tiles the model first looks at, for the nuclei's size
# The pixels its nuclei are outlined on where the slide has them: the model's
# maps are brought back to tiles this fine, whose outlines follow a nucleus
# more closely than its own pixels do (through a job, on MoNuSeg's held-out
# images with a 0.5 um/px level: AJI 0.535 read at 0.25 against 0.522 at 0.5).
OUTLINE_MPP = LEARNED_MPP / 2


def model_zoom(tile_mpp: float, model_mpp: float = LEARNED_MPP) -> float:
    """Model pixels per tile pixel: 1 for tiles near the model's pixel size."""
    zoom = tile_mpp / model_mpp
    return 1.0 if abs(zoom - 1) <= PIXEL_SIZE_TOLERANCE else zoom


class LearnedSegmenter(BatchedModel):
    """``tile_mpp``: the pixel size of the tiles it is given. A slide whose
    pyramid has no level near the model's 0.5 um/px (a 40x scan with one
    level, say) is read at another size: each tile is then resampled to the
    model's pixel size, and the class map back to the tile's, so nuclei come
    out in tile pixels whatever the scan."""

    def __init__(
        self,
        engine: str | Engine = "auto",
        device: str = "auto",
        tile_mpp: float = LEARNED_MPP,
        model_mpp: float = LEARNED_MPP,
    ) -> None:
        """``engine``: a name (``ENGINES``) or an engine itself (training's,
        whose model may work at another ``model_mpp``)."""
        self.engine = make_engine(engine, device) if isinstance(engine, str) else engine
        self.multiple = padding_multiple(self.engine.space_to_depth)
        self.zoom = model_zoom(tile_mpp, model_mpp)
        area = 1 / (self.zoom * self.zoom)  # tile pixels per model pixel
        self.params = InstanceParams(min_area_px=max(1, round(InstanceParams().min_area_px * area)))

    def _segment_one_size(self, tiles: list[RGB]) -> list[Labels]:
        height, width = tiles[0].shape[:2]
        size = (max(1, round(width * self.zoom)), max(1, round(height * self.zoom)))
        inputs = [model_input(self._to_model(tile, size), self.multiple) for tile in tiles]
        batch = inputs[0][None] if len(inputs) == 1 else np.stack(inputs)
        outputs = self.engine.logits(batch)[:, :, : size[1], : size[0]]
        return [self._labels(out, (width, height)) for out in outputs]

    def _labels(self, logits: npt.NDArray[np.float32], size: tuple[int, int]) -> Labels:
        """Seeds from the model's maps, nuclei outlined on the tile's."""
        if self.zoom == 1.0:
            return labels_from_logits(logits, self.params)
        seeds = cv2.resize(
            seeds_from_logits(logits, self.params), size, interpolation=cv2.INTER_NEAREST
        )
        return labels_from_logits(self._to_tile(logits, size), self.params, seeds)

    def _to_model(self, rgb: RGB, size: tuple[int, int]) -> RGB:
        if self.zoom == 1.0:
            return rgb
        shrink = self.zoom < 1
        method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        resized: RGB = cv2.resize(rgb, size, interpolation=method)
        return resized

    def _to_tile(
        self, logits: npt.NDArray[np.float32], size: tuple[int, int]
    ) -> npt.NDArray[np.float32]:
        if self.zoom == 1.0:
            return logits
        planes = [cv2.resize(p, size, interpolation=cv2.INTER_LINEAR) for p in logits]
        result: npt.NDArray[np.float32] = np.stack(planes)
        return result


def padding_multiple(space_to_depth: int) -> int:
    """What input sides must be multiples of: the blocks, then the poolings."""
    return space_to_depth << (len(WIDTHS) - 1)


def model_input(rgb: RGB, multiple: int = MULTIPLE) -> RGB:
    """The tile padded at the bottom and right (edge pixels repeated) to
    multiples of ``multiple``; crop the output back."""
    height, width = rgb.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return rgb


def pixel_blocks(batch: RGB, space_to_depth: int = SPACE_TO_DEPTH) -> PixelBlocks:
    """A batch of ``model_input``, (N, H, W, 3), as the network's s x s pixel
    blocks, (N, H/s, W/s, 3 s^2), channel 3 (s i + j) + c for colour c of
    pixel (i, j) of its block: a pixel unshuffle, done on bytes before the
    graph (inside it, it moved floats between layouts)."""
    s = space_to_depth
    n, height, width = batch.shape[:3]
    rows = np.ascontiguousarray(batch).reshape(n * height // s, s, width // s, 3 * s)
    # Row i of each block, its s pixels' colours side by side, as one channel group.
    blocks: PixelBlocks = cv2.merge([rows[:, i] for i in range(s)])
    return blocks.reshape(n, height // s, width // s, 3 * s * s)


def centred(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """What the float network takes: pixel values / 255 - 0.5."""
    result: npt.NDArray[np.float32] = pixels.astype(np.float32)
    result *= 1 / 255
    result -= 0.5
    return result


def pixels_from_blocks(
    blocks: npt.NDArray[np.float32], space_to_depth: int = SPACE_TO_DEPTH
) -> npt.NDArray[np.float32]:
    """The network's (N, H/s, W/s, 4 s^2) block logits, channel k s^2 + i s + j
    for map k at pixel (i, j) of its block, as (N, 4, H, W): a pixel shuffle
    that moves each run of s neighbouring pixels (j) as one item, several
    times faster than numpy or ONNX Runtime moving single floats."""
    s = space_to_depth
    n, height, width, channels = blocks.shape
    maps = channels // (s * s)
    run = np.dtype((np.void, 4 * s))  # s float32 logits side by side
    runs = np.ascontiguousarray(blocks, np.float32).view(run).reshape(n, height, width, maps, s)
    pixels = np.ascontiguousarray(runs.transpose(0, 3, 1, 4, 2))  # n, map, y, i, x
    result: npt.NDArray[np.float32] = pixels.view(np.float32).reshape(
        n, maps, height * s, width * s
    )
    return result


@dataclass(frozen=True)
class LearnedRecipe(Recipe):
    engine: str = "auto"
    device: str = "auto"
    tile_mpp: float = 0.0  # of the tiles it is given; 0: unknown (taken as the model's)
    model_mpp: float = LEARNED_MPP  # where the model looks at them (``looking_mpp``)

    def build(self) -> LearnedSegmenter:
        return LearnedSegmenter(
            self.engine, self.device, self.tile_mpp or LEARNED_MPP, self.model_mpp
        )


def _median_um2(areas_px: npt.NDArray[np.int64], pixel_um: float) -> float | None:
    return round(float(np.median(areas_px)) * pixel_um**2, 1) if len(areas_px) else None


def looking_mpp(areas_px: npt.NDArray[np.integer], tile_mpp: float, model_mpp: float) -> float:
    """The pixel size the model looks at a slide at, from the pixel areas of
    the nuclei it found on tiles of ``tile_mpp`` looking at ``model_mpp`` (its
    own): closer where they are small (``nucleus_scale``)."""
    factor = nucleus_scale.magnification(areas_px * (tile_mpp * tile_mpp))
    return model_mpp if factor == 1.0 else round(model_mpp / factor, 3)


class LearnedBackend(Backend):
    name = "learned"
    mpp = LEARNED_MPP
    outline_mpp = OUTLINE_MPP

    def check(self, settings: ModelSettings) -> None:
        """Fails with an actionable message when the weights or ONNX Runtime are missing."""
        missing = [f.name for f in (ONNX_FILE, INT8_FILE, TORCH_FILE) if not f.is_file()]
        if missing:
            raise BackendUnavailable(
                f"backend 'learned': its weights are missing ({', '.join(missing)})"
            )
        if importlib.util.find_spec("onnxruntime") is None and not cuda_present():
            raise BackendUnavailable(
                "backend 'learned' needs ONNX Runtime on the worker (pip install onnxruntime),"
                " or PyTorch with a GPU"
            )

    def prepare(self, slide: JobSlide, settings: ModelSettings) -> Prepared:
        ran = engine_details(settings.learned_engine, settings.device)
        batching = model_batching(settings, str(ran["device"]))
        own = LearnedRecipe(
            self.name,
            **batching,
            engine=settings.learned_engine,
            device=settings.device,
            tile_mpp=slide.working_mpp or 0.0,
        )
        areas = slide.sample_areas(own, SIZE_SAMPLE_TILES)
        pixel_um = slide.pixel_um
        looks: dict[str, float | None] = {}
        if slide.working_mpp is None:
            own, areas, pixel_um, looks = self._scan_from_nuclei(slide, own, areas)
        looking = looking_mpp(areas, pixel_um, LEARNED_MPP)
        recipe = dataclasses.replace(own, model_mpp=looking)
        look = SizeLook(
            model_mpp=looking,
            trained_mpp=LEARNED_MPP,
            sample_nucleus_um2=_median_um2(areas, pixel_um),
            slide_mpp_from_nuclei=pixel_um if slide.working_mpp is None else None,
            first_looks_um2=looks,
        )
        details: dict[str, object] = {
            "model": "nuclei_unet",
            **look.details(),
            **ran,
            "tiles_resampled": model_zoom(recipe.tile_mpp or LEARNED_MPP, looking) != 1.0,
            "batch_size": batching["tiles_per_pass"],
        }
        return Prepared(recipe, details, look)

    @staticmethod
    def _scan_from_nuclei(
        slide: JobSlide, own: LearnedRecipe, areas: npt.NDArray[np.int64]
    ) -> tuple[LearnedRecipe, npt.NDArray[np.int64], float, dict[str, float | None]]:
        """A slide with no pixel size was taken at the default 0.5 um/px: a
        40x scan's nuclei then reach the model at twice their size, and it
        splits them. A second first look, taking its tiles at half that,
        says which it is (``nucleus_scale.finer_scan``): the recipe, the
        areas and the pixel size it takes, and both looks' medians."""
        half = slide.pixel_um / 2
        finer = dataclasses.replace(own, tile_mpp=half)
        finer_areas = slide.sample_areas(finer, SIZE_SAMPLE_TILES)
        looks = {
            f"{slide.pixel_um:g}": _median_um2(areas, slide.pixel_um),
            f"{half:g}": _median_um2(finer_areas, half),
        }
        if nucleus_scale.finer_scan(areas * slide.pixel_um**2, finer_areas * half**2):
            return finer, finer_areas, half, looks
        return own, areas, slide.pixel_um, looks

    def preferred_here(self, settings: ModelSettings) -> bool:
        """Wherever it can run, CPUs included: it finds nuclei the classical
        segmenter misses and outlines them better (the model card), for a
        cost per tile the model card and docs/benchmarks.md measure."""
        try:
            self.check(settings)
        except BackendUnavailable:
            return False
        return True
