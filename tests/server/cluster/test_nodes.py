"""A node record read from Redis is checked like any other input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dpkit.server.cluster.nodes import MAX_RECORD_BYTES, BadRecord, NodeRecord

GOOD = {
    "node_id": "n1",
    "url": "http://127.0.0.1:8080",
    "capacity": 4,
    "load": 1,
    "queue": 0,
    "instance": "abc123",
    "started_at": 1.0,
    "seen_at": 2.0,
}


def test_a_record_goes_through_json_unchanged() -> None:
    record = NodeRecord.from_json(json.dumps(GOOD))
    assert NodeRecord.from_json(record.to_json()) == record
    assert record.free == 3
    shown = record.for_api(now=5.0)
    assert shown["seen_s_ago"] == 3.0
    assert shown["free"] == 3


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({**GOOD, "capacity": "4"}), "wrong type"),
        (json.dumps({**GOOD, "capacity": True}), "wrong type"),
        (json.dumps({**GOOD, "load": -1}), "negative"),
        (json.dumps({**GOOD, "url": "javascript:alert(1)"}), "http"),
        (json.dumps({**GOOD, "node_id": "n1\n"}), "node id"),
        (json.dumps({**GOOD, "instance": ""}), "instance"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "url"}), "no 'url'"),
        ('{"node_id": "n1", "seen_at": 1e999}', "no |finite"),
        ("x" * (MAX_RECORD_BYTES + 1), "longer than"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_a_bad_record_is_refused_by_name(raw: str | bytes, complaint: str) -> None:
    with pytest.raises(BadRecord, match=complaint):
        NodeRecord.from_json(raw)


def test_dpkit_serve_refuses_a_bad_redis_url_without_echoing_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dpkit", "serve", "--redis-url", "http://u:hunter2@x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "redis://" in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr
