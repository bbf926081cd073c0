"""Cancellation that a job running whole inside a pool process can see: a
small shared-memory array of tokens. Cancelling writes the job's token into
its slot; the process polls ``is_marked``. Tokens only grow, so a slot reused
by a later job never reads as an earlier one's."""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import MutableSequence

SLOTS = 4096


def _slot(token: int, slots: int) -> int:
    return token % slots


class CancelBoard:
    def __init__(self) -> None:
        self.array = multiprocessing.get_context("spawn").RawArray("q", SLOTS)
        self._tokens = itertools.count(1)

    def new_token(self) -> int:
        return next(self._tokens)

    def cancel(self, token: int) -> None:
        self.array[_slot(token, SLOTS)] = token


def is_marked(array: MutableSequence[int] | None, token: int) -> bool:
    """Whether ``token``'s job was cancelled on the board ``array`` (a
    shared-memory read: cheap enough to poll between strips and phases)."""
    return array is not None and token > 0 and array[_slot(token, len(array))] == token
