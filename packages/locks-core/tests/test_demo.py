"""The demo runs on the file backend and proves mutual exclusion."""

from __future__ import annotations

import io

from locks import demo


def test_demo_proves_mutual_exclusion() -> None:
    out = io.StringIO()
    assert demo.run(workers=3, seconds=1.0, stream=out)
    text = out.getvalue()
    assert "mutual exclusion held" in text
    assert "0 overlapping" in text and "(0 lost updates)" in text
    rows = [line.split() for line in text.splitlines() if line.strip() and line.split()[0] in ("0", "1", "2")]
    assert len(rows) == 3 and all(int(row[1]) > 0 for row in rows), text


def test_percentile_nearest_rank() -> None:
    assert demo.percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert demo.percentile([1.0, 2.0], 1.0) == 2.0
