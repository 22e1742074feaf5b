"""The link to the shared store and the member table, sans I/O: time is an argument."""

from __future__ import annotations

from quiesce.core.cluster import Link, Members, cluster_guard, disagreements


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


def test_cluster_guard_takes_the_node_that_sees_the_fewest() -> None:
    views = {"A": ["b1", "b2", "b3"], "B": ["b1", "b2"], "C": ["b1"]}

    def enabled(name: str) -> bool:
        return True

    assert cluster_guard(views, "b1", enabled, 1) == ("C", 0)
    assert cluster_guard(views, "b2", enabled, 1) is None  # C does not count on b2
    assert cluster_guard(views, "b2", enabled, 2) == ("B", 1)
    assert cluster_guard(views, "b1", enabled, 0) is None
    # a server the shared admin state took out since B published does not count
    assert cluster_guard({"B": ["b1", "b2"]}, "b1", lambda n: n != "b2", 1) == ("B", 0)


def test_disagreements_name_every_verdict() -> None:
    verdicts = {"A": {"web/b1": "up", "web/b2": "up"}, "B": {"web/b1": "down", "web/b2": "up"}}
    assert disagreements(verdicts) == [{"server": "web/b1", "verdicts": {"A": "up", "B": "down"}}]
    assert disagreements({"A": {"web/b1": "up"}}) == []
    # a node lists only what is not fine: the others' default
    compact = {"A": {}, "B": {"web/b2": "down"}}
    assert disagreements(compact, default="up") == [
        {"server": "web/b2", "verdicts": {"A": "up", "B": "down"}}
    ]
