"""Log formats: JSON lines are one parseable object each, in both modes."""

from __future__ import annotations

import json
import logging

import pytest

from wsi_runtime import logs


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_transition_lines_are_pure_json_and_json_mode_wraps_the_rest(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        logs.configure("INFO", fmt)
        logging.getLogger("wsi.scheduler.transitions").info(
            '{"event":"job_transition","to":"RUNNING"}'
        )
        logging.getLogger("wsi.worker").info("job %s failed: %s", "j1", "Bogus marker length")
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        logs.configure("WARNING", "text")
    assert json.loads(lines[0]) == {"event": "job_transition", "to": "RUNNING"}
    if fmt == "json":
        other = json.loads(lines[1])
        assert other["level"] == "INFO" and other["logger"] == "wsi.worker"
        assert other["message"] == "job j1 failed: Bogus marker length"
    else:
        assert lines[1].endswith("INFO wsi.worker: job j1 failed: Bogus marker length")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of text, json"):
        logs.configure("INFO", "xml")
