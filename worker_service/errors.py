"""The worker's one exception hierarchy. Everything that can stop a job is a
JobError (the job fails, with this message for the user) or JobCancelled; the
worker's RunJob handler is the one place that turns them into job outcomes."""

from __future__ import annotations


class JobError(Exception):
    """The job cannot succeed; the message tells the user why, ``code`` (a gRPC
    status name) says what kind of failure it is."""

    code = "FAILED_PRECONDITION"


class JobFailed(JobError):
    """A job's own check failed (too many tiles, a backend that is missing)."""


class RegionOutsideSlide(JobFailed):
    """The job's region does not meet its slide."""

    code = "INVALID_ARGUMENT"


class SlideError(JobError):
    """The slide cannot be opened or read; the message is OpenSlide's."""

    code = "INVALID_ARGUMENT"


class SlideOutsideRoots(SlideError):
    """At open, the slide's real path is no longer inside a slide root: it was
    swapped (for a link elsewhere, say) after it was checked."""

    code = "PERMISSION_DENIED"


class TileReadError(SlideError):
    """One tile could not be read (corrupt tile data)."""


class PoolCrashed(JobError):
    """A pool process died mid-task (a crash in native code, the OOM killer).
    The pool has been replaced; only the jobs with tasks in flight fail."""

    code = "INTERNAL"


class InternalError(JobError):
    """Something in the worker itself broke (a bug, a full disk); the details
    are in its log, the message says only what the user needs."""

    code = "INTERNAL"


class BackendUnavailable(JobError):
    """The segmentation backend cannot run here; the message says what to install or where."""

    code = "UNAVAILABLE"


class JobCancelled(Exception):
    """The job was cancelled; it stops at the next check."""
