"""Metadata keys of the API, named once for servers and clients alike."""

from __future__ import annotations

USER_ID = "x-user-id"  # who calls (trusted-header mode); HTTP header X-User-ID at the gateway
AUTHORIZATION = "authorization"  # "Bearer TOKEN" (token mode); HTTP header Authorization
WORKER_SECRET = "x-worker-secret"  # the scheduler's proof to its workers that it is the scheduler
