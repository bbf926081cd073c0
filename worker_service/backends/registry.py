"""The segmentation backends by the names the API gives them
(``wsi_runtime.job_params.BACKENDS``; a test holds the two to the same set).
Adding a backend: its module, a line here, and its name in that schema."""

from __future__ import annotations

import contextlib

from worker_service.backends.base import Backend, ModelSettings
from worker_service.backends.classical import ClassicalBackend
from worker_service.backends.instanseg import InstanSegBackend
from worker_service.backends.learned import LearnedBackend
from worker_service.errors import BackendUnavailable

# In the order ``--default-backend auto`` asks them whether they prefer this worker.
BACKENDS: dict[str, Backend] = {
    backend.name: backend for backend in (LearnedBackend(), ClassicalBackend(), InstanSegBackend())
}
FALLBACK = "classical"  # what ``--default-backend auto`` picks where no backend prefers itself


def get(name: str) -> Backend:
    backend = BACKENDS.get(name)
    if backend is None:
        raise BackendUnavailable(
            f"unknown segmentation backend {name!r}; use one of {', '.join(BACKENDS)}"
        )
    return backend


def default_backend(setting: str, settings: ModelSettings) -> str:
    """The backend of a job that names none: ``setting`` itself, or for
    ``auto`` the first backend that prefers this worker (learned wherever
    its weights and a runtime for them are installed), else the fallback."""
    if setting != "auto":
        return setting
    return next((name for name, b in BACKENDS.items() if b.preferred_here(settings)), FALLBACK)


def available(settings: ModelSettings) -> dict[str, float]:
    """Backend -> the pixel size it segments at (0: the job's target_mpp), for
    those this worker can run now: what it tells the scheduler when it joins."""
    found: dict[str, float] = {}
    for name, backend in BACKENDS.items():
        with contextlib.suppress(BackendUnavailable):
            backend.check(settings)
            found[name] = backend.mpp or 0.0
    return found
