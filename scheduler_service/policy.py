"""The scheduling policy: which pending job runs next, as pure data structures.

No I/O, no clock, no threads: the scheduler service feeds it events (submit,
dispatch, finish, lose, cancel) and applies what it returns. Every rule of the
scheduling contract lives here:

- a branch (lane) is scoped to user + workflow + branch name and runs one job
  at a time, in submission order;
- at most ``max_workers`` jobs run, and never more than the free worker slots
  the caller reports;
- at most ``max_active_users`` users hold an active slot; a user takes one when
  their first job starts and gives it back when they have no PENDING or
  RUNNING job left; waiting users are admitted in the order they began waiting;
- free slots go round-robin across active users, FIFO (submission order)
  within a user;
- a job starts only after its dependencies SUCCEED; it is CANCELLED when one
  fails or is cancelled;
- a job that FAILS ends its branch: the later jobs of the branch are CANCELLED;
- a lost job (its worker vanished) goes back to the head of its branch and is
  retried up to ``max_attempts`` times, then FAILS.

A decision costs O(active users + log(ready jobs)): ready jobs sit in one heap
per user, keyed by submission order, so the size of the queue barely matters.
"""

from __future__ import annotations

import enum
import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field


class State(enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})

LaneKey = tuple[str, str, str]
"""(user, workflow_id, branch): a branch is scoped to its workflow and user."""


class WaitKind(enum.Enum):
    DEPENDENCY = "dependency"
    BRANCH = "branch"
    USER_SLOT = "user_slot"
    WORKER_SLOT = "worker_slot"


@dataclass(frozen=True)
class WaitReason:
    """Why a pending job waits; ``job_id`` names the job it waits on, if any."""

    kind: WaitKind
    job_id: str = ""
    position: int = 0


@dataclass(frozen=True)
class Transition:
    """A job changed state. ``reason`` says why it failed or was cancelled;
    ``cause`` names the job whose end caused it, if another job did."""

    job_id: str
    state: State
    reason: str = ""
    cause: str = ""


@dataclass(frozen=True)
class NewJob:
    job_id: str
    user: str
    workflow_id: str
    branch: str
    depends_on: tuple[str, ...] = ()


@dataclass
class _Job:
    job_id: str
    user: str
    lane: LaneKey
    order: int
    depends_on: tuple[str, ...]
    state: State = State.PENDING
    attempt: int = 0
    unmet_deps: int = 0
    dependents: list[str] = field(default_factory=list)
    cancel_requested: bool = False


@dataclass
class _Lane:
    queue: deque[str] = field(default_factory=deque)
    running: str | None = None
    failed: bool = False


@dataclass
class _User:
    unfinished: int = 0
    pending: int = 0
    ready: list[int] = field(default_factory=list)  # heap of submission orders
    lanes: set[LaneKey] = field(default_factory=set)


class PolicyError(ValueError):
    """An event that does not fit the current state (a caller bug)."""


class SchedulingPolicy:
    def __init__(self, max_workers: int = 4, max_active_users: int = 3, max_attempts: int = 3):
        if max_workers < 1 or max_active_users < 1 or max_attempts < 1:
            raise ValueError("max_workers, max_active_users and max_attempts must be >= 1")
        self.max_workers = max_workers
        self.max_active_users = max_active_users
        self.max_attempts = max_attempts
        self._jobs: dict[str, _Job] = {}
        self._lanes: dict[LaneKey, _Lane] = {}
        self._users: dict[str, _User] = {}
        self._active: deque[str] = deque()  # round-robin order of slot holders
        self._active_set: set[str] = set()
        self._waiting: deque[str] = deque()  # users waiting for a slot, FIFO
        self._waiting_set: set[str] = set()
        self._running: dict[str, None] = {}  # RUNNING job ids, in start order
        self._pending = 0
        self._order = 0
        self._by_order: dict[int, str] = {}

    # ---- queries -------------------------------------------------------------

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def pending_count(self) -> int:
        return self._pending

    @property
    def active_users(self) -> list[str]:
        return list(self._active)

    @property
    def waiting_users(self) -> list[str]:
        """Users with pending jobs and no active slot (in the order they came)."""
        return list(self._waiting)

    @property
    def users_waiting_for_a_slot(self) -> int:
        """Those of them kept out by the active-user cap; while a slot is free,
        waiting users wait only for a worker or a dependency, not for a slot."""
        return len(self._waiting) if len(self._active) >= self.max_active_users else 0

    def state(self, job_id: str) -> State:
        return self._job(job_id).state

    def attempt(self, job_id: str) -> int:
        return self._job(job_id).attempt

    def cancel_requested(self, job_id: str) -> bool:
        return self._job(job_id).cancel_requested

    def lane_of(self, job_id: str) -> LaneKey:
        return self._job(job_id).lane

    def running_jobs(self) -> list[str]:
        return list(self._running)

    def pending_of(self, user: str) -> int:
        """The user's PENDING jobs, kept as a count: O(1) on the create path."""
        record = self._users.get(user)
        return record.pending if record else 0

    def lane_depths(self, user: str) -> dict[LaneKey, tuple[int, int]]:
        """(pending, running) per lane of ``user`` that has unfinished jobs."""
        depths: dict[LaneKey, tuple[int, int]] = {}
        for key in self._users[user].lanes if user in self._users else ():
            lane = self._lanes[key]
            pending = sum(1 for j in lane.queue if self._jobs[j].state is State.PENDING)
            running = 1 if lane.running else 0
            if pending or running:
                depths[key] = (pending, running)
        return depths

    def wait_reason(self, job_id: str) -> WaitReason | None:
        """Why a PENDING job is not running; None if it is not pending."""
        job = self._job(job_id)
        if job.state is not State.PENDING:
            return None
        if job.unmet_deps:
            blocking = next(
                (d for d in job.depends_on if self._jobs[d].state is not State.SUCCEEDED), ""
            )
            return WaitReason(WaitKind.DEPENDENCY, blocking)
        lane = self._lanes[job.lane]
        if lane.running is not None:
            return WaitReason(WaitKind.BRANCH, lane.running)
        head = self._lane_head(lane)
        if head != job_id and head is not None:
            return WaitReason(WaitKind.BRANCH, head)
        if job.user not in self._active_set:
            position = self._waiting.index(job.user) + 1 if job.user in self._waiting_set else 0
            if len(self._active) >= self.max_active_users:
                return WaitReason(WaitKind.USER_SLOT, position=position)
        return WaitReason(WaitKind.WORKER_SLOT)

    # ---- events --------------------------------------------------------------

    def submit(self, jobs: Sequence[NewJob]) -> None:
        """Adds one workflow's jobs. Jobs of a lane run in the order given here;
        dependencies must name jobs of the same call."""
        ids = {spec.job_id for spec in jobs}
        if len(ids) != len(jobs) or ids & self._jobs.keys():
            raise PolicyError("job ids must be new and unique")
        for spec in jobs:
            unknown = [d for d in spec.depends_on if d not in ids]
            if unknown:
                raise PolicyError(f"job {spec.job_id} depends on jobs outside its workflow")
        for spec in jobs:
            self._order += 1
            lane_key = (spec.user, spec.workflow_id, spec.branch)
            job = _Job(spec.job_id, spec.user, lane_key, self._order, tuple(spec.depends_on))
            self._by_order[self._order] = spec.job_id
            job.unmet_deps = len(set(job.depends_on))
            self._jobs[spec.job_id] = job
            self._lanes.setdefault(lane_key, _Lane()).queue.append(spec.job_id)
            user = self._users.setdefault(spec.user, _User())
            user.lanes.add(lane_key)
            user.unfinished += 1
            user.pending += 1
            self._pending += 1
            if spec.user not in self._active_set and spec.user not in self._waiting_set:
                self._waiting.append(spec.user)
                self._waiting_set.add(spec.user)
        for spec in jobs:
            for dep_id in set(spec.depends_on):
                self._jobs[dep_id].dependents.append(spec.job_id)
        for lane_key in {(s.user, s.workflow_id, s.branch) for s in jobs}:
            self._refresh_lane(lane_key)

    def next_dispatches(self, free_slots: int) -> list[str]:
        """Picks the jobs to start now and marks them RUNNING (attempt + 1)."""
        budget = min(free_slots, self.max_workers - len(self._running))
        started: list[str] = []
        while budget > 0:
            job_id = self._pick()
            if job_id is None:
                break
            self._start(job_id)
            started.append(job_id)
            budget -= 1
        return started

    def dispatch(self, job_id: str) -> bool:
        """Starts this job, as a recorded earlier pick (journal replay). The
        normal pick is tried first, so an exact replay keeps the round-robin and
        admission order exactly; otherwise the job starts if it could run at
        all, its user taking a free active slot. False if it cannot start."""
        if len(self._running) >= self.max_workers:
            return False
        if self._pick_matches(job_id):
            return True
        if job_id not in self._jobs or not self._is_ready(job_id):
            return False
        user = self._jobs[job_id].user
        if user not in self._active_set:
            if len(self._active) >= self.max_active_users:
                return False
            self._waiting.remove(user)
            self._waiting_set.discard(user)
            self._active.append(user)
            self._active_set.add(user)
        self._rotate_to_back(user)
        self._start(job_id)
        return True

    def _pick_matches(self, job_id: str) -> bool:
        """Runs the normal pick if it would choose ``job_id``; leaves every
        structure as it was otherwise."""
        saved = (deque(self._active), set(self._active_set), deque(self._waiting))
        saved_waiting_set = set(self._waiting_set)
        if self._pick() == job_id:
            self._start(job_id)
            return True
        self._active, self._active_set, self._waiting = saved
        self._waiting_set = saved_waiting_set
        return False

    def forget(self, job_ids: Sequence[str]) -> None:
        """Drops finished jobs for good (retention): their memory is freed."""
        for job_id in job_ids:
            job = self._job(job_id)
            if not job.state.terminal:
                raise PolicyError(f"job {job_id} is {job.state.value}, not finished")
        for job_id in job_ids:
            job = self._jobs.pop(job_id)
            self._by_order.pop(job.order, None)
            self._lanes.pop(job.lane, None)  # every job of a finished workflow's lanes is done
            if job.user in self._users:
                self._users[job.user].lanes.discard(job.lane)

    def finish(self, job_id: str, state: State, reason: str = "") -> list[Transition]:
        """A running job ended SUCCEEDED, FAILED or CANCELLED. Returns the
        transitions this caused, the job's own first."""
        job = self._job(job_id)
        if job.state is not State.RUNNING:
            raise PolicyError(f"job {job_id} is {job.state.value}, not RUNNING")
        if not state.terminal:
            raise PolicyError(f"{state.value} is not a final state")
        lane = self._lanes[job.lane]
        lane.running = None
        del self._running[job_id]
        if state is State.FAILED:
            lane.failed = True
        out = [self._end(job, state, reason)]
        if state is State.SUCCEEDED:
            for dep_id in job.dependents:
                dependent = self._jobs[dep_id]
                if dependent.state is State.PENDING:
                    dependent.unmet_deps -= 1
                    if dependent.unmet_deps == 0:
                        self._refresh_lane(dependent.lane)
        else:
            out.extend(self._cascade_dependents(job))
            if state is State.FAILED:
                out.extend(self._fail_lane(job.lane, job_id))
        if job.lane in self._lanes:
            self._refresh_lane(job.lane)
        return out

    def lose(self, job_id: str, reason: str) -> list[Transition]:
        """The running job's lease broke (worker lost). Retries it at the head of
        its branch, or FAILS it once it has used ``max_attempts``."""
        job = self._job(job_id)
        if job.state is not State.RUNNING:
            raise PolicyError(f"job {job_id} is {job.state.value}, not RUNNING")
        if job.cancel_requested:
            return self.finish(job_id, State.CANCELLED, "cancelled")
        if job.attempt >= self.max_attempts:
            return self.finish(
                job_id, State.FAILED, f"{reason} (gave up after {job.attempt} attempts)"
            )
        lane = self._lanes[job.lane]
        lane.running = None
        del self._running[job_id]
        job.state = State.PENDING
        self._pending += 1
        self._users[job.user].pending += 1
        lane.queue.appendleft(job_id)
        self._refresh_lane(job.lane)
        return [Transition(job_id, State.PENDING, reason)]

    def cancel(self, job_id: str, reason: str = "cancelled by user") -> list[Transition]:
        """Cancels a PENDING job at once (with its dependents), or marks a RUNNING
        one for cooperative cancellation: the caller stops its worker and then
        reports ``finish(job_id, CANCELLED)``. Finished jobs: no transitions."""
        job = self._job(job_id)
        if job.state is State.RUNNING:
            job.cancel_requested = True
            return []
        if job.state is not State.PENDING:
            return []
        return self._cancel_pending(job, reason)

    # ---- internals -----------------------------------------------------------

    def _job(self, job_id: str) -> _Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise PolicyError(f"unknown job {job_id}") from None

    def _lane_head(self, lane: _Lane) -> str | None:
        """First PENDING job of the lane, dropping finished ones on the way."""
        queue = lane.queue
        while queue and self._jobs[queue[0]].state is not State.PENDING:
            queue.popleft()
        return queue[0] if queue else None

    def _refresh_lane(self, lane_key: LaneKey) -> None:
        """Pushes the lane's head to its user's ready heap if it can run now."""
        lane = self._lanes[lane_key]
        if lane.running is not None:
            return
        head = self._lane_head(lane)
        if head is None:
            return
        job = self._jobs[head]
        if job.unmet_deps == 0:
            heapq.heappush(self._users[job.user].ready, job.order)

    def _is_ready(self, job_id: str) -> bool:
        job = self._jobs[job_id]
        if job.state is not State.PENDING or job.unmet_deps:
            return False
        lane = self._lanes[job.lane]
        return lane.running is None and self._lane_head(lane) == job_id

    def _peek_ready(self, user: str) -> str | None:
        heap = self._users[user].ready
        while heap:
            job_id = self._by_order.get(heap[0])
            if job_id is not None and self._is_ready(job_id):
                return job_id
            heapq.heappop(heap)
        return None

    def _pick(self) -> str | None:
        # Admit waiting users, in order, while there is room among slot holders.
        if len(self._active) < self.max_active_users:
            for user in list(self._waiting):
                if len(self._active) >= self.max_active_users:
                    break
                job_id = self._peek_ready(user)
                if job_id is None:
                    continue
                self._waiting.remove(user)
                self._waiting_set.discard(user)
                self._active.append(user)
                self._active_set.add(user)
                # A newly admitted user's first job starts now (it takes the slot).
                self._rotate_to_back(user)
                return job_id
        for _ in range(len(self._active)):
            user = self._active[0]
            self._active.rotate(-1)
            job_id = self._peek_ready(user)
            if job_id is not None:
                return job_id
        return None

    def _rotate_to_back(self, user: str) -> None:
        self._active.remove(user)
        self._active.append(user)

    def _start(self, job_id: str) -> None:
        job = self._jobs[job_id]
        lane = self._lanes[job.lane]
        heap = self._users[job.user].ready
        if heap and heap[0] == job.order:
            heapq.heappop(heap)
        lane.queue.popleft()
        lane.running = job_id
        job.state = State.RUNNING
        job.attempt += 1
        self._pending -= 1
        self._users[job.user].pending -= 1
        self._running[job_id] = None

    def _end(self, job: _Job, state: State, reason: str, cause: str = "") -> Transition:
        user = self._users[job.user]
        if job.state is State.PENDING:
            self._pending -= 1
            user.pending -= 1
        job.state = state
        user.unfinished -= 1
        if user.unfinished == 0:
            self._release(job.user)
        return Transition(job.job_id, state, reason, cause)

    def _release(self, user: str) -> None:
        if user in self._active_set:
            self._active.remove(user)
            self._active_set.discard(user)
        if user in self._waiting_set:
            self._waiting.remove(user)
            self._waiting_set.discard(user)
        record = self._users[user]
        record.ready.clear()
        for lane_key in record.lanes:
            del self._lanes[lane_key]
        record.lanes.clear()

    def _cancel_pending(self, job: _Job, reason: str, cause: str = "") -> list[Transition]:
        return self._cancel_all([(job.job_id, reason, cause)])

    def _cascade_dependents(self, job: _Job) -> list[Transition]:
        reason = f"dependency ended {job.state.value}"
        return self._cancel_all([(d, reason, job.job_id) for d in job.dependents])

    def _fail_lane(self, lane_key: LaneKey, failed_job: str) -> list[Transition]:
        lane = self._lanes.get(lane_key)
        if lane is None:
            return []
        reason = "branch stopped after a failed job"
        out = self._cancel_all([(job_id, reason, failed_job) for job_id in lane.queue])
        lane.queue.clear()
        return out

    def _cancel_all(self, seeds: Sequence[tuple[str, str, str]]) -> list[Transition]:
        """Cancels each PENDING job of ``seeds`` (job, reason, cause) and, in
        turn, every PENDING job that depends on one cancelled here.

        An explicit stack rather than recursion: a chain of any length the caps
        accept costs memory proportional to its length, never stack frames.
        The order is the depth-first order a recursive walk would give."""
        out: list[Transition] = []
        touched: dict[LaneKey, None] = {}
        stack = list(reversed(seeds))
        while stack:
            job_id, reason, cause = stack.pop()
            job = self._jobs[job_id]
            if job.state is not State.PENDING:
                continue
            out.append(self._end(job, State.CANCELLED, reason, cause))
            touched[job.lane] = None
            because = f"dependency ended {State.CANCELLED.value}"
            stack.extend((d, because, job_id) for d in reversed(job.dependents))
        for lane_key in touched:
            lane = self._lanes.get(lane_key)
            if lane is not None and not lane.failed:
                self._refresh_lane(lane_key)
        return out
