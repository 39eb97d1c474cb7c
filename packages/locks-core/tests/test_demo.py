"""The demo proves mutual exclusion: in processes on the file backend, in threads on memory://
without locks-file."""

from __future__ import annotations

import io

import pytest

from locks import demo


def test_demo_proves_mutual_exclusion() -> None:
    out = io.StringIO()
    assert demo.run(workers=3, seconds=1.0, stream=out)
    text = out.getvalue()
    assert "mutual exclusion held" in text
    assert "0 overlapping" in text and "(0 lost updates)" in text
    rows = [line.split() for line in text.splitlines() if line.strip() and line.split()[0] in ("0", "1", "2")]
    assert len(rows) == 3 and all(int(row[1]) > 0 for row in rows), text


def test_without_a_file_backend_the_demo_runs_threads_on_memory_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "file_backend_available", lambda: False)
    out = io.StringIO()
    assert demo.run(workers=3, seconds=1.0, stream=out)
    text = out.getvalue()
    assert "locks-file is not installed: 3 worker threads of this one process" in text
    assert "memory://" in text
    assert "mutual exclusion held" in text and "in 3 threads" in text
    assert "(0 lost updates)" in text and "strictly increasing" in text


def test_percentile_nearest_rank() -> None:
    assert demo.percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert demo.percentile([1.0, 2.0], 1.0) == 2.0
