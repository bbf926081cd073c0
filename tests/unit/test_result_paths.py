"""What a user sees of paths: result files by name under their job, slides
relative to their root, and a job folder that stays inside the results root
whatever id it is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler_service.convert import public_files
from scheduler_service.summaries import public_summary, take_summary
from worker_service.storage.result_files import job_folder
from wsi_runtime.slide_paths import SlidePathError, resolve_slide, shown_path


def test_result_files_are_shown_relative_to_the_results_folder() -> None:
    files = {"cells.geojson": "/srv/wsi/results/j1/cells.geojson", "preview.png": "j1/preview.png"}
    assert public_files("j1", files) == {
        "cells.geojson": "j1/cells.geojson",
        "preview.png": "j1/preview.png",
    }


def test_summaries_of_older_workers_lose_the_slides_absolute_path() -> None:
    old = json.dumps({"slide": {"path": "/srv/slides/lab/a.svs", "width": 5}, "nuclei": 3})
    assert json.loads(public_summary(old))["slide"] == {"path": "a.svs", "width": 5}
    new = json.dumps({"slide": {"path": "lab/a.svs"}})
    assert public_summary(new) == new
    assert public_summary("not json") == "not json"


def test_slides_are_shown_relative_to_their_root(tmp_path: Path) -> None:
    root = tmp_path / "slides"
    (root / "lab").mkdir(parents=True)
    (root / "lab" / "a.svs").write_bytes(b"x")
    real = resolve_slide("lab/a.svs", [root])
    assert shown_path(real, [root]) == "lab/a.svs"
    assert shown_path("/elsewhere/b.svs", [root]) == "b.svs"
    with pytest.raises(SlidePathError) as outside:
        resolve_slide("/etc/passwd", [root])
    assert str(root) not in str(outside.value) and outside.value.permission


@pytest.mark.parametrize("job_id", ["..", "../x", "/tmp/x", "a/b", "", "."])
def test_a_job_folder_never_leaves_the_results_root(tmp_path: Path, job_id: str) -> None:
    with pytest.raises(ValueError):
        job_folder(tmp_path, job_id)
    assert job_folder(tmp_path, "j1") == (tmp_path / "j1").resolve()


def test_a_summary_is_taken_in_once_as_text_and_object() -> None:
    old = json.dumps({"slide": {"path": "/srv/slides/a.svs"}, "nuclei": 3})
    text, document = take_summary(old)
    assert document == {"slide": {"path": "a.svs"}, "nuclei": 3} == json.loads(text)
    assert take_summary('{"nuclei": 3}') == ('{"nuclei": 3}', {"nuclei": 3})
    assert take_summary("[1]") == ("[1]", None)
    assert take_summary("") == ("", None)
