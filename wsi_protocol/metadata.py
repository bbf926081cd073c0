"""Metadata keys of the API, named once for servers and clients alike."""

from __future__ import annotations

USER_ID = "x-user-id"  # who calls (trusted-header mode); HTTP header X-User-ID at the gateway
