"""The load test's invariant sweep finds what it claims to find."""

from __future__ import annotations

from bench.load_test import Auditor, Report

INF = float("inf")


def auditor(runs: dict[str, tuple[str, str, list[tuple[float, float]]]]) -> Auditor:
    audit = Auditor(stub=None, report=Report())  # type: ignore[arg-type]
    for job_id, (user, branch, spans) in runs.items():
        audit.runs[job_id] = (user, (user, "wf", branch), [list(s) for s in spans])
    return audit


def test_a_clean_history_has_no_violation() -> None:
    audit = auditor(
        {
            "a": ("u1", "x", [(0, 1)]),
            "b": ("u1", "x", [(1, 2)]),  # starts as "a" ends: fine
            "c": ("u2", "y", [(0, 2)]),
            "d": ("u3", "z", [(0.5, 1.5), (3, 4)]),
        }
    )
    assert audit.check() == []


def test_each_broken_invariant_is_reported() -> None:
    same_branch = auditor({"a": ("u1", "x", [(0, 2)]), "b": ("u1", "x", [(1, 3)])})
    assert any("two jobs of branch" in v for v in same_branch.check())
    too_many = auditor({str(i): (f"u{i % 2}", f"b{i}", [(0, 5)]) for i in range(5)})
    assert any("5 jobs running > 4" in v for v in too_many.check())
    too_many_users = auditor({str(i): (f"u{i}", "b", [(0, 5)]) for i in range(4)})
    assert any("4 users running > 3" in v for v in too_many_users.check())
    still_running = auditor({"a": ("u1", "x", [(0, INF)]), "b": ("u1", "x", [(9, 10)])})
    assert any("two jobs of branch" in v for v in still_running.check())
