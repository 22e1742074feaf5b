"""The link to the shared store and the member table, sans I/O: time is an argument."""

from __future__ import annotations

from quiesce.core.cluster import Link, Members


def test_link_turns_stale_after_stale_after_without_an_answer_and_back() -> None:
    link = Link(3.0, last_seen=100.0)
    assert (link.state(102.9), link.poll(102.9)) == ("up", None)
    assert round(link.lag(102.9), 3) == 2.9
    assert link.state(103.0) == "stale"  # no error: etcd hangs (frozen, no quorum)
    assert link.poll(103.0) == "node_isolated"
    assert link.poll(104.0) is None  # once
    link.seen(105.0, revision=42)
    assert (link.state(105.0), link.revision, link.lag(105.0)) == ("up", 42, 0.0)
    assert link.poll(105.0) == "node_rejoined" and link.poll(105.5) is None
    link.seen(106.0, revision=7)  # an older revision (a slow answer) does not go back
    assert link.revision == 42


def test_a_failure_is_down_only_after_stale_after() -> None:
    link = Link(3.0, last_seen=0.0)
    link.failed(0.5, "ConnectionRefusedError")
    assert link.state(1.0) == "up" and link.poll(1.0) is None  # a blip changes nothing
    link.seen(1.5)
    link.failed(2.0, "UNAVAILABLE")
    assert link.state(4.4) == "up" and link.state(4.5) == "down"
    assert link.poll(4.5) == "node_isolated" and link.isolated_since == 1.5
    assert link.error == "UNAVAILABLE"
    link.seen(5.0)
    assert (link.state(5.0), link.error, link.poll(5.0)) == ("up", "", "node_rejoined")


def test_members_join_and_leave_never_this_node() -> None:
    m = Members("a")
    assert m.put("a", {"version": "1"}) is False  # this node: no join of its own
    assert m.put("b", {"heartbeat": 1}) is True
    assert m.put("b", {"heartbeat": 2}) is False  # a heartbeat
    assert m.put("c", {}) is True
    assert m.remove("b") is True and m.remove("b") is False
    assert m.keep_only({"a"}) == ["c"]  # a full read: c left meanwhile
    assert list(m.nodes) == ["a"]
