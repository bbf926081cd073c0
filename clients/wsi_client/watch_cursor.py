"""Where a ``watch()`` is in a workflow's event stream, pure: it decides which
events to hand to the caller and where to resume after a broken connection,
so no transition is missed or repeated across reconnects."""

from __future__ import annotations

from dataclasses import dataclass

from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

TERMINAL_WORKFLOW_STATES = frozenset(
    {pb.WORKFLOW_STATE_SUCCEEDED, pb.WORKFLOW_STATE_FAILED, pb.WORKFLOW_STATE_CANCELLED}
)


@dataclass
class WatchCursor:
    """``after`` is the sequence of the last change the caller has seen."""

    after: int = 0
    finished: bool = False

    def accept(self, event: pb.WorkflowEvent) -> bool:
        """True if the caller should get ``event``. A replayed change the caller
        already has, or a snapshot that adds nothing, is dropped."""
        if event.sequence <= self.after and not (
            self.after == 0 and event.kind == pb.WorkflowEvent.SNAPSHOT
        ):
            return False
        self.after = max(self.after, event.sequence)
        if event.workflow_state in TERMINAL_WORKFLOW_STATES:
            self.finished = True
        return True
