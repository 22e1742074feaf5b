"""Balancing algorithms, a registry of sans-IO classes named as the config names them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from quiesce.balancing.base import Algorithm, Candidate


class RoundRobin:
    """Plain round robin over the candidates of the moment."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[Candidate], key: str | None) -> Candidate | None:
        if not candidates:
            return None
        choice = candidates[self._next % len(candidates)]
        self._next += 1
        return choice


ALGORITHMS: dict[str, Callable[[], Algorithm]] = {
    "round_robin": RoundRobin,
}


def make_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]()
    except KeyError:
        raise ValueError(f"unknown balancing algorithm {name!r}") from None


__all__ = ["ALGORITHMS", "Algorithm", "Candidate", "make_algorithm"]
