"""The learned model in 8-bit integers for CPUs: ONNX Runtime's static
quantisation (QDQ, weights per channel), calibrated on fixed crops of the
training images, then scored on the held-out ones beside the float model.

    python -m wsi_training.quantise --data DIR [DIR ...] [--weights DIR]

About twice the float model's speed per core for the same held-out scores
(see the model card); `make train-model` runs it after training."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from worker_service.backends.learned import (
    INPUT_SCALE,
    INPUT_ZERO_POINT,
    INT8_FILE,
    ONNX_FILE,
    OnnxEngine,
    centred,
    model_input,
    padding_multiple,
    pixel_blocks,
)
from wsi_training import data
from wsi_training.train import learned_scores

CALIBRATION_CROP = 256


class Crops(CalibrationDataReader):  # type: ignore[misc]
    """The top-left and bottom-right crops of every training image."""

    def __init__(self, examples: list[data.Example], space_to_depth: int) -> None:
        crops, multiple = [], padding_multiple(space_to_depth)
        for example in examples:
            crops.append(example.rgb[:CALIBRATION_CROP, :CALIBRATION_CROP])
            crops.append(example.rgb[-CALIBRATION_CROP:, -CALIBRATION_CROP:])
        self._batches = iter(
            [
                {"rgb": centred(pixel_blocks(model_input(crop, multiple)[None], space_to_depth))}
                for crop in crops
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def bytes_in(path: Path) -> None:
    """Makes the quantised graph take its input already quantised: the
    QuantizeLinear of the input (behind the layout change, if any) is taken
    out, the input becomes uint8, and its scale and zero point go into the
    file's metadata, from which ``OnnxEngine`` makes a table of the 256
    values: each pixel value quantised once instead of each pixel of each
    tile converted to float and back (the same bytes reach the first
    convolution)."""
    model = onnx.load(str(path))
    graph = model.graph
    (source,) = graph.input
    layout = {source.name}  # the input and what Transposes make of it
    quantise = None
    for node in graph.node:
        if node.op_type == "Transpose" and node.input[0] in layout:
            layout.add(node.output[0])
        elif node.op_type == "QuantizeLinear" and node.input[0] in layout:
            quantise = node
            break
    if quantise is None:
        raise ValueError(f"{path}: no QuantizeLinear on the graph's input")
    constants = {c.name: onnx.numpy_helper.to_array(c) for c in graph.initializer}
    scale, zero_point = constants[quantise.input[1]], constants[quantise.input[2]]
    if scale.size != 1 or zero_point.dtype != np.uint8:
        raise ValueError(f"{path}: the input is not quantised per tensor to uint8")
    for node in graph.node:
        node.input[:] = [quantise.input[0] if n == quantise.output[0] else n for n in node.input]
    graph.node.remove(quantise)
    uint8 = onnx.TensorProto.UINT8
    source.type.tensor_type.elem_type = uint8
    for info in graph.value_info:
        if info.name in layout:
            info.type.tensor_type.elem_type = uint8
    onnx.helper.set_model_props(
        model, {INPUT_SCALE: repr(float(scale)), INPUT_ZERO_POINT: str(int(zero_point))}
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def scores(model: Path, examples: list[data.Example], model_mpp: float) -> dict[str, Any]:
    return learned_scores(OnnxEngine(model), examples, model_mpp)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    data.add_data_argument(parser)
    parser.add_argument("--weights", type=Path, default=ONNX_FILE.parent)
    args = parser.parse_args()
    log_path = args.weights / "training_log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    # A model trained at another pixel size or on other blocks says so in its log.
    model_mpp = float(log.get("model_mpp", data.MODEL_MPP))
    training, validation = data.split(data.load(args.data, model_mpp))
    source, target = args.weights / ONNX_FILE.name, args.weights / INT8_FILE.name
    space_to_depth = OnnxEngine(source).space_to_depth
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX shape inference only: the symbolic one cannot follow a resize
        # by a fixed factor of a side that is a symbol.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            Crops(training, space_to_depth),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # 7-bit weights: on CPUs without VNNI (AVX2 only), ONNX Runtime's
            # u8 x s8 products add up in saturating 16-bit pairs, and full-range
            # weights lost nuclei there (F1 0.84 against the float model on an
            # AVX2-only EPYC; 0.97 with reduce_range).
            reduce_range=True,
        )
    bytes_in(target)
    result = {
        "float32": scores(source, validation, model_mpp),
        "int8": scores(target, validation, model_mpp),
    }
    if log:
        log["validation"]["learned_int8_onnx"] = result["int8"]
        log.setdefault("files", {})["onnx_int8"] = target.name
        log_path.write_text(json.dumps(log, indent=2) + "\n")
    for name, row in result.items():
        print(f"held-out F1 / AJI, {name}: {row['f1']} / {row['aji']}")


if __name__ == "__main__":
    main()
