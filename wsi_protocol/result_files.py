"""The names of a job's result files, as ``Job.result.files`` keys them and
``GET /jobs/{id}/results/{name}`` serves them: one owner for worker,
scheduler, gateway and the web UI (which reads them from ``GET /result-files``)."""

from __future__ import annotations

CELLS = "cells.geojson"  # nuclei: QuPath detections, one feature per line
TISSUE = "tissue.geojson"  # tissue outline: QuPath annotations
TISSUE_MASK = "tissue_mask.png"  # the tissue mask at the overview's scale
PREVIEW = "preview.png"  # the overview with tissue and nuclei drawn
SUMMARY = "summary.json"
CELL_INDEX = "cells.index.npz"  # the worker's own index of CELLS: never a result

# The result files by role, as the web UI asks for them.
BY_ROLE = {
    "cells": CELLS,
    "tissue": TISSUE,
    "tissue_mask": TISSUE_MASK,
    "preview": PREVIEW,
    "summary": SUMMARY,
}
