"""The parameter schema the scheduler checks at submit and the worker parses
at run time: typed, finite, in range, known keys only."""

from __future__ import annotations

import pytest

from wsi_protocol.param_text import param_text
from wsi_runtime.job_params import (
    TARGET_MPP_RANGE,
    TILE_SIZE_RANGE,
    InvalidParams,
    JobParams,
    parse,
    schema,
)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, JobParams()),
        ({"tile_size": "1024"}, JobParams(tile_size=1024)),
        ({"tile_size": "1024.0", "overlap": " 32 "}, JobParams(tile_size=1024, overlap=32)),
        ({"target_mpp": "0.25", "min_tissue": "0"}, JobParams(target_mpp=0.25, min_tissue=0.0)),
        ({"backend": "instanseg", "overlap": ""}, JobParams(backend="instanseg")),
    ],
)
def test_numbers_as_people_write_them(params: dict[str, str], expected: JobParams) -> None:
    assert parse("CELL_SEGMENTATION", params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"target_mpp": "inf"}, "finite"),
        ({"target_mpp": "nan"}, "finite"),
        ({"target_mpp": "-1"}, "out of range"),
        ({"target_mpp": "0"}, "out of range"),
        ({"tile_size": "huge"}, "tile_size='huge' is not a number"),
        ({"tile_size": "512.5"}, "whole number"),
        ({"tile_size": "16"}, "out of range: 64 to 8192"),
        ({"tile_size": "1e9"}, "out of range"),
        ({"overlap": "256"}, "less than half of tile_size"),
        ({"overlap": "-1"}, "out of range"),
        ({"min_tissue": "1.5"}, "out of range: 0 to 1"),
        ({"tile_sise": "512"}, "unknown param 'tile_sise'.*known: backend, min_tissue"),
        (
            {"backend": "magic"},
            "unknown segmentation backend; use one of classical, learned, instanseg",
        ),
    ],
)
def test_anything_else_is_refused_with_what_to_fix(params: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidParams, match=message):
        parse("CELL_SEGMENTATION", params)


def test_a_deployment_minimum_tile_size_narrows_the_schema() -> None:
    assert parse("TISSUE_MASK", {"tile_size": "128", "overlap": "32"}, 128).tile_size == 128
    with pytest.raises(InvalidParams, match="below this deployment's minimum of 128"):
        parse("TISSUE_MASK", {"tile_size": "64"}, min_tile_size=128)


def test_defaults_and_bounds_are_valid_together_at_every_edge() -> None:
    """The default overlap fits any tile size from the smallest up; each
    bound's edge is accepted with the other defaults."""
    low, high = TILE_SIZE_RANGE
    assert parse("CELL_SEGMENTATION", {}) == JobParams()
    for tile in (low, 128, 129, 130, 512, high):
        parsed = parse("CELL_SEGMENTATION", {"tile_size": str(tile)}, min_tile_size=low)
        assert parsed.overlap == min(64, tile // 2 - 1) and parsed.overlap < tile // 2
    assert parse("CELL_SEGMENTATION", {"tile_size": "512", "overlap": "0"}).overlap == 0
    assert parse("CELL_SEGMENTATION", {"tile_size": "512", "overlap": "255"}).overlap == 255
    for mpp in TARGET_MPP_RANGE:
        assert parse("CELL_SEGMENTATION", {"target_mpp": str(mpp)}).target_mpp == mpp
    for share in ("0", "1"):
        assert parse("CELL_SEGMENTATION", {"min_tissue": share}).min_tissue == float(share)
    with pytest.raises(InvalidParams, match="overlap=64 must be less than half of tile_size"):
        parse("CELL_SEGMENTATION", {"tile_size": "128", "overlap": "64"})  # asked for: refused


def test_the_schema_narrowed_to_a_deployment() -> None:
    plain, here = schema(), schema(128, ["learned", "classical"])
    assert plain["tile_size"]["min"] == 64 and here["tile_size"]["min"] == 128
    assert plain["backend"]["choices"] == ["classical", "learned", "instanseg"]
    assert here["backend"]["choices"] == ["classical", "learned"]  # in the schema's order
    assert schema(0, [])["backend"]["choices"] == plain["backend"]["choices"]  # not known yet
    assert here["overlap"] == plain["overlap"]
    # A slide's own pixel size defaults to its file's, which a form shows as words.
    assert plain["slide_mpp"]["default"] == 0.0 and plain["slide_mpp"]["min"] == 0.05
    assert plain["slide_mpp"]["default_shown"] == "from the slide"


def test_unknown_job_type() -> None:
    with pytest.raises(InvalidParams, match="unknown job type 'SEGMENT'"):
        parse("SEGMENT", {})


@pytest.mark.parametrize(
    ("written", "text"),
    [(1024, "1024"), (0.25, "0.25"), (float("inf"), "inf"), (True, "true"), ("512", "512")],
)
def test_numbers_people_write_become_the_apis_strings(written: object, text: str) -> None:
    assert param_text(written) == text
