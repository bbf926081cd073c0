from __future__ import annotations

from dataclasses import dataclass

from scheduler_service.events import WorkflowFeed


@dataclass
class Event:
    sequence: int


async def test_slow_subscriber_is_dropped_to_a_snapshot_not_blocking_others() -> None:
    feed = WorkflowFeed()
    slow = feed.subscribe(queue_size=2)
    fast = feed.subscribe(queue_size=100)
    for _ in range(5):
        feed.publish(Event(feed.next_sequence()))
    assert await slow.next() is None  # resync needed
    assert [await fast.next() for _ in range(5)] == [Event(s) for s in (2, 3, 4, 5, 6)]
    feed.publish(Event(feed.next_sequence()))
    assert await slow.next() == Event(7)  # delivers again after resync
    slow.close()
    assert slow not in feed.subscribers


def test_replay_after() -> None:
    feed = WorkflowFeed()
    assert feed.sequence == 1
    for _ in range(3):
        feed.publish(Event(feed.next_sequence()))
    assert [e.sequence for e in feed.replay_after(1) or []] == [2, 3, 4]
    assert [e.sequence for e in feed.replay_after(3) or []] == [4]
    assert feed.replay_after(4) == []


def test_replay_after_dropped_history_asks_for_snapshot(monkeypatch) -> None:
    import scheduler_service.events as events

    monkeypatch.setattr(events, "RETAINED", 2)
    feed = events.WorkflowFeed()
    for _ in range(5):
        feed.publish(Event(feed.next_sequence()))
    assert feed.replay_after(1) is None
    assert [e.sequence for e in feed.replay_after(4) or []] == [5, 6]
