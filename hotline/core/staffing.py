"""Erlang C (M/M/n) staffing arithmetic: probability of waiting, service level, speed of answer,
and the responders a queue needs for a service-level target
(docs/metrics.md, "Staffing: Erlang C").
Pure and cheap enough to run at every scrape: the staffing search is one O(n) pass."""

from __future__ import annotations

import math
from dataclasses import dataclass

# A headcount within this relative distance of a whole number is that number: 465 / (1 - 0.07)
# is 500.00000000000006 in binary floating point, and nobody should be rostered a 501st person
# for the rounding error of a shrinkage typed as a decimal.
_WHOLE_REL_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class Staffing:
    """The answer for one queue; every figure is evaluated at `agents`."""

    offered_load: float  # A = arrival rate x mean handle time, in Erlangs
    agents: int  # n required by Erlang C for the target (after the floor)
    rostered: int  # ceil(agents / (1 - shrinkage)), never below the floor
    p_wait: float  # C(n, A)
    service_level: float  # SL(t) at n
    asa_s: float  # mean speed of answer at n (math.inf if unstable)
    occupancy: float  # A / n


def _check_agents(name: str, n: int, minimum: int) -> None:
    if n < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {n}")


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")


def _check_times(aht_s: float, t_s: float | None = None) -> None:
    _check_finite("aht_s", aht_s)
    if aht_s <= 0:
        raise ValueError(f"aht_s must be positive, got {aht_s}")
    if t_s is not None:
        _check_finite("t_s", t_s)
        if t_s < 0:
            raise ValueError(f"t_s must not be negative, got {t_s}")


def _next_inv_b(inv_b: float, k: int, a: float) -> float:
    """1/B(k, A) from 1/B(k-1, A): the robust Erlang B recurrence (Albert & Zhu), never A^k/k!.

    1/B grows without bound once k is well past A and may overflow to inf; that is harmless,
    since it only ever drives C to 0 (see `_erlang_c`)."""
    return 1.0 + inv_b * k / a


def _inv_b(n: int, a: float) -> float:
    inv_b = 1.0  # 1/B(0) = 1
    for k in range(1, n + 1):
        inv_b = _next_inv_b(inv_b, k, a)
    return inv_b


def _erlang_c(n: int, a: float, inv_b: float) -> float:
    """C(n, A) = nB / (n - A(1 - B)), divided through by B so that it needs only 1/B.

    For n > A > 0 the denominator is positive and at least n, so the result is in (0, 1]; an
    infinite 1/B gives exactly 0.0, never NaN."""
    return n / ((n - a) * inv_b + a)


def _service_level(n: int, a: float, c: float, aht_s: float, t_s: float) -> float:
    return 1.0 - c * math.exp(-(n - a) * t_s / aht_s)


def _asa(n: int, a: float, c: float, aht_s: float) -> float:
    return c * aht_s / (n - a)


def p_wait(n: int, a: float) -> float:
    """Erlang C: the probability that a call waits, with n responders and A Erlangs offered.

    No load (A <= 0) never waits: 0.0. An unstable queue (n <= A) always does: 1.0."""
    _check_agents("n", n, 0)
    _check_finite("a", a)
    if a <= 0:
        return 0.0
    if n <= a:
        return 1.0
    return _erlang_c(n, a, _inv_b(n, a))


def service_level(n: int, a: float, aht_s: float, t_s: float) -> float:
    """SL(t): the share of calls answered within t_s seconds, 1 - C * exp(-(n - A) t / h).

    No load (A <= 0) gives 1.0 (nobody waits); an unstable queue (n <= A) gives 0.0."""
    _check_agents("n", n, 0)
    _check_finite("a", a)
    _check_times(aht_s, t_s)
    if a <= 0:
        return 1.0
    if n <= a:
        return 0.0
    return _service_level(n, a, _erlang_c(n, a, _inv_b(n, a)), aht_s, t_s)


def asa(n: int, a: float, aht_s: float) -> float:
    """Mean speed of answer in seconds, C * h / (n - A); math.inf for an unstable queue (n <= A).

    No load (A <= 0) gives 0.0."""
    _check_agents("n", n, 0)
    _check_finite("a", a)
    _check_times(aht_s)
    if a <= 0:
        return 0.0
    if n <= a:
        return math.inf
    return _asa(n, a, _erlang_c(n, a, _inv_b(n, a)), aht_s)


def _rostered(agents: int, shrinkage: float, floor: int) -> int:
    exact = agents / (1.0 - shrinkage)
    whole = round(exact)
    headcount = whole if math.isclose(exact, whole, rel_tol=_WHOLE_REL_TOL) else math.ceil(exact)
    return max(headcount, agents, floor)


def required(
    rate_per_s: float,
    aht_s: float,
    t_s: float,
    target: float,
    *,
    max_occupancy: float = 0.85,
    shrinkage: float = 0.0,
    floor: int = 2,
    max_agents: int = 10_000,
) -> Staffing:
    """The fewest responders (at least `floor`) whose service level within `t_s` seconds reaches
    `target` at an occupancy of at most `max_occupancy`, and the headcount to roster for them.

    No arrivals or no handle time (zero or negative: an idle estimator, a counter reset) is no
    load: `floor` responders. If even `max_agents` cannot meet the target, the answer is
    `max_agents`, with the figures at that size (possibly an unstable queue: P(wait) 1, SL 0,
    ASA inf) -- a staffing emergency to show, not an error."""
    _check_finite("rate_per_s", rate_per_s)
    _check_finite("aht_s", aht_s)
    _check_finite("t_s", t_s)
    if t_s < 0:
        raise ValueError(f"t_s must not be negative, got {t_s}")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target}")
    if not 0.0 < max_occupancy <= 1.0:
        raise ValueError(f"max_occupancy must be in (0, 1], got {max_occupancy}")
    if not 0.0 <= shrinkage < 1.0:
        raise ValueError(f"shrinkage must be in [0, 1), got {shrinkage}")
    _check_agents("floor", floor, 1)
    _check_agents("max_agents", max_agents, floor)

    if rate_per_s <= 0 or aht_s <= 0:
        return Staffing(
            offered_load=0.0,
            agents=floor,
            rostered=_rostered(floor, shrinkage, floor),
            p_wait=0.0,
            service_level=1.0,
            asa_s=0.0,
            occupancy=0.0,
        )

    # Both factors are finite, but the product may not be (1e200 x 1e200): such a load is
    # beyond any max_agents, which the branch below handles without ever calling math.floor(inf).
    a = float(rate_per_s * aht_s)
    if a >= max_agents:
        n = max_agents
        return Staffing(a, n, _rostered(n, shrinkage, floor), 1.0, 0.0, math.inf, a / n)

    # The smallest stable size at or above the floor; SL rises and occupancy falls with n, so
    # the first n from here that meets both conditions is the answer. 1/B(n) is carried from
    # one n to the next, so the whole search is one O(n) pass, not O(n^2).
    n = max(math.floor(a) + 1, floor)
    inv_b = _inv_b(n, a)
    while True:
        c = _erlang_c(n, a, inv_b)
        sl = _service_level(n, a, c, aht_s, t_s)
        if (sl >= target and a / n <= max_occupancy) or n >= max_agents:
            break
        n += 1
        inv_b = _next_inv_b(inv_b, n, a)
    return Staffing(
        offered_load=a,
        agents=n,
        rostered=_rostered(n, shrinkage, floor),
        p_wait=c,
        service_level=sl,
        asa_s=_asa(n, a, c, aht_s),
        occupancy=a / n,
    )
