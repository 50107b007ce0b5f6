"""Long work shows progress at a steady interval: done / total, rate, what is left (issue #14, item 6)."""

from __future__ import annotations

import logging

import pytest

from retention.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_the_interval_not_per_chunk(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = Progress("extract orders", 10_000, every=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="retention.progress"):
        for _ in range(100):  # 100 chunks of 100 rows, 1 s apart
            clock.now += 1
            progress.advance(100)
        progress.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 100 // 30 + 1  # at 30, 60, 90 s, and the closing line
    assert lines[0] == "extract orders: 3,000 / 10,000 rows (30 %), 100 rows/s, about 70 s left"
    assert lines[-1] == "extract orders: 10,000 / 10,000 rows (100 %), 100 rows/s (done)"


def test_without_a_total_it_still_counts_and_a_quick_job_says_only_done(caplog) -> None:
    clock = Clock()
    progress = Progress("send", unit="messages", every=30, clock=clock)
    with caplog.at_level(logging.INFO, logger="retention.progress"):
        clock.now += 2
        progress.advance(10)
        progress.finish()
        Progress("nothing", 0, clock=clock).finish()
    assert [r.getMessage() for r in caplog.records] == ["send: 10 messages, 5 messages/s (done)"]
