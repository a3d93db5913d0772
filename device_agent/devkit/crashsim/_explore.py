"""Which crash images to build at a crash point: the plans, exhaustive where small and sampled where not."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from device_agent.devkit.crashsim._disk import APPLY, DROP, Fate, Outcome, Pending, Plan
from device_agent.devkit.crashsim._events import Write

_COIN = 0.5  # an uncertain name keeps its old or takes its new directory state


@dataclass(frozen=True, slots=True)
class Exploration:
    """How many images each crash point yields.

    - up to `exhaustive_limit` pending operations: every apply/drop combination (2**n images); beyond it, the
      prefixes in issue order (the cache written back in order up to some point): all n + 1 of them, or at
      most `prefixes` (none and all included, the rest sampled);
    - `torn`: images where the writes before one multi-sector write are applied, that write is torn at sector
      boundaries (a random non-empty proper subset of its pieces persisted) and the later ones are dropped;
    - `random`: images where each operation independently is applied, dropped, torn or (if `garbage`) turned
      to noise, and each uncertain name independently keeps its old or takes its new directory state.
    """

    exhaustive_limit: int = 4
    prefixes: int = 16
    torn: int = 4
    random: int = 4
    garbage: bool = True
    sector: int = 512

    def __post_init__(self) -> None:
        if min(self.exhaustive_limit, self.torn, self.random) < 0 or self.prefixes < 2 or self.sector < 1:  # noqa: PLR2004
            raise ValueError(
                "counts are non-negative, prefixes at least 2 (none, all), the sector size positive"
            )


def plans(
    pending: Sequence[Pending], names: Sequence[str], rng: random.Random, ex: Exploration
) -> Iterator[Plan]:
    """The plans for one crash point, distinct by construction except where sampling repeats itself."""
    if not pending and not names:
        yield Plan("durable", {})
        return
    yield from _orderly(pending, names, rng, ex)
    yield from _torn(pending, names, rng, ex)
    for index in range(ex.random):
        yield _random_plan(pending, names, rng, ex, f"random#{index}")


def _orderly(
    pending: Sequence[Pending], names: Sequence[str], rng: random.Random, ex: Exploration
) -> Iterator[Plan]:
    everything = frozenset(names)
    if len(pending) <= ex.exhaustive_limit:
        for mask in itertools.product((False, True), repeat=len(pending)):
            outcomes = {p.seq: APPLY if keep else DROP for p, keep in zip(pending, mask, strict=True)}
            label = "subset:" + "".join("1" if keep else "0" for keep in mask)
            yield Plan(label, outcomes, _names(mask, names, everything, rng))
        return
    for count in _prefix_counts(len(pending), rng, ex.prefixes):
        mask = tuple(index < count for index in range(len(pending)))
        outcomes = {p.seq: APPLY for p in pending[:count]}
        yield Plan(f"prefix:{count}/{len(pending)}", outcomes, _names(mask, names, everything, rng))


def _prefix_counts(total: int, rng: random.Random, limit: int) -> list[int]:
    if total + 1 <= limit:
        return list(range(total + 1))
    return [0, *sorted(rng.sample(range(1, total), limit - 2)), total]


def _names(
    mask: Sequence[bool], names: Sequence[str], everything: frozenset[str], rng: random.Random
) -> frozenset[str]:
    """All-dropped keeps every old name, all-applied takes every new one; anything between, a coin each."""
    if not any(mask):
        return frozenset()
    if all(mask):
        return everything
    return frozenset(name for name in names if rng.random() < _COIN)


def _torn(
    pending: Sequence[Pending], names: Sequence[str], rng: random.Random, ex: Exploration
) -> Iterator[Plan]:
    candidates = [index for index, p in enumerate(pending) if p.tearable(ex.sector)]
    chosen = sorted(rng.sample(candidates, min(ex.torn, len(candidates))))
    for index in chosen:
        outcomes = {p.seq: APPLY for p in pending[:index]}
        outcomes[pending[index].seq] = _tear(pending[index], rng, ex.sector)
        new_names = frozenset(name for name in names if rng.random() < _COIN)
        yield Plan(f"torn:{index}/{len(pending)}", outcomes, new_names)


def _tear(pending: Pending, rng: random.Random, sector: int) -> Outcome:
    count = len(pending.pieces(sector))
    kept = rng.sample(range(count), rng.randint(1, count - 1))
    return Outcome(Fate.TEAR, frozenset(kept))


def _random_plan(
    pending: Sequence[Pending], names: Sequence[str], rng: random.Random, ex: Exploration, label: str
) -> Plan:
    outcomes = {p.seq: _random_outcome(p, rng, ex) for p in pending}
    return Plan(label, outcomes, frozenset(name for name in names if rng.random() < _COIN))


def _random_outcome(pending: Pending, rng: random.Random, ex: Exploration) -> Outcome:
    """40% applied, 30% dropped, 20% torn (applied if it fits in one sector), 10% noise (or torn)."""
    roll = rng.random()
    op = pending.op
    if roll < 0.4 or (roll >= 0.7 and not isinstance(op, Write)):  # noqa: PLR2004 - the odds above
        return APPLY
    if roll < 0.7:  # noqa: PLR2004
        return DROP
    if isinstance(op, Write) and roll >= 0.9 and ex.garbage:  # noqa: PLR2004
        return Outcome(Fate.GARBAGE, noise=rng.randbytes(len(op.data)))
    return _tear(pending, rng, ex.sector) if pending.tearable(ex.sector) else APPLY
