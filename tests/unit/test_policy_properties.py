"""Property tests: random event sequences never break the scheduling invariants."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from scheduler_service.policy import NewJob, SchedulingPolicy, State, WaitKind

USERS = ["u1", "u2", "u3", "u4", "u5"]
BRANCHES = ["a", "b", "c"]
MAX_WORKERS = 3
MAX_USERS = 2
MAX_ATTEMPTS = 2


class PolicyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.policy = SchedulingPolicy(MAX_WORKERS, MAX_USERS, MAX_ATTEMPTS)
        self.capacity = MAX_WORKERS
        self.jobs: dict[str, NewJob] = {}
        self.lane_order: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        self.final: dict[str, State] = {}
        self.starts: dict[str, int] = defaultdict(int)
        self.workflows = 0

    # ---- events ----

    @rule(
        user=st.sampled_from(USERS),
        shape=st.lists(
            st.tuples(st.sampled_from(BRANCHES), st.lists(st.integers(0, 10), max_size=2)),
            min_size=1,
            max_size=5,
        ),
    )
    def submit(self, user: str, shape: list[tuple[str, list[int]]]) -> None:
        self.workflows += 1
        wf = f"w{self.workflows}"
        specs = []
        for index, (branch, dep_picks) in enumerate(shape):
            # Dependencies point only backwards: with FIFO lanes that keeps it acyclic.
            deps = sorted({f"{wf}-{d % index}" for d in dep_picks} if index else set())
            specs.append(NewJob(f"{wf}-{index}", user, wf, branch, tuple(deps)))
        self.policy.submit(specs)
        for spec in specs:
            self.jobs[spec.job_id] = spec
            self.lane_order[(user, wf, spec.branch)].append(spec.job_id)

    @rule(free=st.integers(0, MAX_WORKERS + 2))
    def dispatch(self, free: int) -> None:
        free = min(free, self.capacity - self.policy.running_count)
        started = self.policy.next_dispatches(max(free, 0))
        assert len(started) <= max(free, 0)
        for job_id in started:
            self._check_may_start(job_id)
            self.starts[job_id] += 1
        if len(started) < free:
            self._check_nothing_runnable_left()

    @precondition(lambda self: self.policy.running_count > 0)
    @rule(pick=st.integers(0, 100), outcome=st.sampled_from(list(State)[2:]))
    def finish(self, pick: int, outcome: State) -> None:
        job_id = self._running()[pick % self.policy.running_count]
        self._record(self.policy.finish(job_id, outcome, "test"))

    @precondition(lambda self: self.policy.running_count > 0)
    @rule(pick=st.integers(0, 100))
    def lose(self, pick: int) -> None:
        job_id = self._running()[pick % self.policy.running_count]
        self._record(self.policy.lose(job_id, "worker lost"))

    @precondition(lambda self: bool(self.jobs))
    @rule(pick=st.integers(0, 10_000))
    def cancel(self, pick: int) -> None:
        job_id = list(self.jobs)[pick % len(self.jobs)]
        was_running = self.policy.state(job_id) is State.RUNNING
        self._record(self.policy.cancel(job_id))
        if was_running:
            assert self.policy.cancel_requested(job_id)

    @rule(capacity=st.integers(0, MAX_WORKERS + 1))
    def workers_change(self, capacity: int) -> None:
        self.capacity = capacity

    # ---- invariants ----

    @invariant()
    def caps_hold(self) -> None:
        running = self._running()
        assert len(running) <= MAX_WORKERS
        lanes = [self.policy.lane_of(j) for j in running]
        assert len(lanes) == len(set(lanes)), "two running jobs in one branch"
        active = self.policy.active_users
        assert len(active) <= MAX_USERS
        assert {self.jobs[j].user for j in running} <= set(active)
        assert not set(active) & set(self.policy.waiting_users)

    @invariant()
    def slot_holders_have_work(self) -> None:
        unfinished = {
            spec.user
            for spec in self.jobs.values()
            if self.policy.state(spec.job_id) in (State.PENDING, State.RUNNING)
        }
        assert set(self.policy.active_users) | set(self.policy.waiting_users) == unfinished

    @invariant()
    def counts_match(self) -> None:
        states = [self.policy.state(j) for j in self.jobs]
        assert states.count(State.PENDING) == self.policy.pending_count
        for user in USERS:
            mine = [self.policy.state(j) for j, spec in self.jobs.items() if spec.user == user]
            assert mine.count(State.PENDING) == self.policy.pending_of(user)
        assert states.count(State.RUNNING) == self.policy.running_count

    def teardown(self) -> None:
        """Drain: with enough workers every job ends, each in exactly one final state."""
        self.capacity = MAX_WORKERS
        for _ in range(10 * len(self.jobs) + 10):
            self.dispatch(MAX_WORKERS)
            running = self._running()
            if not running:
                break
            for job_id in running:
                self._record(self.policy.finish(job_id, State.SUCCEEDED))
        for job_id in self.jobs:
            assert self.policy.state(job_id).terminal, job_id
            assert self.final[job_id] is self.policy.state(job_id)
            assert self.starts[job_id] <= MAX_ATTEMPTS
        assert self.policy.active_users == [] and self.policy.waiting_users == []

    # ---- helpers ----

    def _running(self) -> list[str]:
        return [j for j in self.jobs if self.policy.state(j) is State.RUNNING]

    def _record(self, transitions) -> None:
        for t in transitions:
            assert t.job_id not in self.final, f"{t.job_id} ended twice"
            if t.state.terminal:
                self.final[t.job_id] = t.state
            assert self.policy.state(t.job_id) is t.state

    def _check_may_start(self, job_id: str) -> None:
        spec = self.jobs[job_id]
        assert job_id not in self.final, "a finished job started again"
        lane = self.lane_order[(spec.user, spec.workflow_id, spec.branch)]
        for earlier in lane[: lane.index(job_id)]:
            assert self.policy.state(earlier).terminal, "FIFO broken within a branch"
        for dep in spec.depends_on:
            assert self.policy.state(dep) is State.SUCCEEDED

    def _check_nothing_runnable_left(self) -> None:
        if self.policy.running_count >= MAX_WORKERS:
            return
        for job_id in self.jobs:
            reason = self.policy.wait_reason(job_id)
            if reason is not None:
                assert reason.kind is not WaitKind.WORKER_SLOT, f"{job_id} could have started"


PolicyMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestPolicyProperties = PolicyMachine.TestCase
