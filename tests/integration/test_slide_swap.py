"""A slide checked at submit and swapped afterwards for a link out of the
slide roots is never opened: the worker checks the real path again where it
opens the slide, and the job FAILS with PERMISSION_DENIED. The outside file
is a FIFO, so any open of it would be seen (a writer can open a FIFO without
blocking only while a reader has it open)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.harness import CMU, SLIDES, cluster
from tests.integration.support import LONG, create, follow, get, spec
from tests.timing import wait_for
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


@contextlib.contextmanager
def watched_fifo(path: Path) -> Iterator[list[str]]:
    """A FIFO at ``path``, and a list that gets an entry if anything opens it to read."""
    os.mkfifo(path)
    opened: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.005):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no reader: nobody opened it
                    continue
                raise
            opened.append("a reader opened the FIFO")
            os.close(fd)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield opened
    finally:
        stop.set()
        thread.join()


def test_a_slide_swapped_after_submit_fails_permission_denied_unopened(tmp_path: Path) -> None:
    root = tmp_path / "slides"
    root.mkdir()
    shutil.copy(SLIDES / CMU, root / CMU)
    shutil.copy(SLIDES / CMU, root / "victim.svs")
    outside = tmp_path / "outside"
    outside.mkdir()
    with (
        watched_fifo(outside / "secret.svs") as opened,
        cluster(tmp_path, worker_slots=(1,), max_workers=1, slide_roots=str(root)) as c,
    ):
        # The single slot is busy, so the victim's job waits after its check.
        busy = create(c, "mallory", [spec("busy", branch="a", params=LONG, slide=CMU)])
        wait_for(
            lambda: get(c, "mallory", busy.workflow_id).jobs[0].state == pb.JOB_STATE_RUNNING,
            30,
            "the first job to run",
        )
        swapped = create(c, "mallory", [spec("swapped", branch="b", slide="victim.svs")])
        assert get(c, "mallory", swapped.workflow_id).jobs[0].state == pb.JOB_STATE_PENDING
        (root / "victim.svs").unlink()
        (root / "victim.svs").symlink_to(outside / "secret.svs")
        follow(c, "mallory", swapped, timeout=120)
        job = get(c, "mallory", swapped.workflow_id).jobs[0]
        assert job.state == pb.JOB_STATE_FAILED
        assert job.error_code == "PERMISSION_DENIED", job.error
        assert "outside the slide roots" in job.error
        assert str(tmp_path) not in job.error
        assert opened == []
        follow(c, "mallory", busy, timeout=120)
