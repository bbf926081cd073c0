"""The names of a job's result files, as ``Job.result.files`` keys them and
``GET /jobs/{id}/results/{name}`` serves them: one owner for worker,
scheduler, gateway and the web UI (which reads them from ``GET /result-files``)."""

from __future__ import annotations

CELLS = "cells.geojson"  # nuclei: QuPath detections, one feature per line
TISSUE = "tissue.geojson"  # tissue outline: QuPath annotations
TISSUE_MASK = "tissue_mask.png"  # the tissue mask at the overview's scale
PREVIEW = "preview.png"  # the overview with tissue and nuclei drawn
SUMMARY = "summary.json"
NUCLEI_TABLE = "nuclei.parquet"  # nuclei: one row each, the feature's id, centroid, measurements
CELL_INDEX = "cells.index.npz"  # the worker's own index of CELLS: never a result

# The result files by role, as the web UI asks for them.
BY_ROLE = {
    "cells": CELLS,
    "tissue": TISSUE,
    "tissue_mask": TISSUE_MASK,
    "preview": PREVIEW,
    "summary": SUMMARY,
    "nuclei_table": NUCLEI_TABLE,
}

# A result file's name as a worker may give it: a plain file name of the job's
# folder (what the gateway can put in a URL path and a header unchanged).
_PLAIN_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_NAME = 128


def unsafe_result_file(job_id: str, files: dict[str, str]) -> str:
    """Why a worker's ``files`` (name -> ``JOB_ID/NAME``) cannot be taken
    as they are, or "": a scheduler trusts a joined worker's answer no further
    than this."""
    for name, path in files.items():
        plain = 0 < len(name) <= MAX_NAME and set(name) <= _PLAIN_NAME
        if not plain or name.startswith("."):
            return f"result file name {name[:MAX_NAME]!r} is not a plain file name"
        if path != f"{job_id}/{name}":
            return f"result file {name!r} is not in the job's folder"
    return ""
