"""Composition is boolean logic: random all/any/not trees over flags agree with a reference."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from quiesce.config import load_text
from quiesce.config.rules import Condition
from quiesce.core.states import Cause
from quiesce.rules import RequestView
from quiesce.rules._conditions import compile_condition
from quiesce.state.registry import Registry

FLAGS = ["f0", "f1", "f2", "f3"]
REGISTRY = Registry(load_text("pools: {}\n"))
REQUEST = RequestView("GET", "/", None, {}, {}, "127.0.0.1")

atoms = st.sampled_from(FLAGS).map(lambda f: {"flag": f})
trees = st.recursive(
    atoms,
    lambda sub: st.one_of(
        st.lists(sub, max_size=3).map(lambda xs: {"all": xs}),
        st.lists(sub, max_size=3).map(lambda xs: {"any": xs}),
        sub.map(lambda x: {"not": x}),
        st.tuples(atoms, sub).map(lambda t: {**t[1], **t[0]} if "flag" not in t[1] else t[1]),
    ),
    max_leaves=8,
)


def reference(tree: dict[str, Any], on: set[str]) -> bool:
    results = []
    if "flag" in tree:
        results.append(tree["flag"] in on)
    if "all" in tree:
        results.append(all(reference(t, on) for t in tree["all"]))
    if "any" in tree:
        results.append(any(reference(t, on) for t in tree["any"]))
    if "not" in tree:
        results.append(not reference(tree["not"], on))
    return all(results)


@settings(max_examples=300, deadline=None)
@given(tree=trees, on=st.sets(st.sampled_from(FLAGS)))
def test_composition_matches_boolean_logic(tree: dict[str, Any], on: set[str]) -> None:
    predicate = compile_condition(Condition.model_validate(tree), REGISTRY)
    REGISTRY.flags.clear()
    for name in FLAGS:
        REGISTRY.set_flag(name, name in on, actor="t", cause=Cause.API)
    assert predicate(REQUEST) is reference(tree, on)
