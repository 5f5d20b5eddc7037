"""Erlang C staffing: the published reference vector, monotonicity and range properties up to
2,000 responders, the floor, shrinkage, the unstable queue and argument validation."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.core.staffing import Staffing, asa, p_wait, required, service_level

# docs/metrics.md, "Reference example": 100 calls per 30 min, 180 s handle time, 20 s / 80 %.
REF_RATE = 100 / 1800
REF_AHT = 180.0
REF_T = 20.0
REF_TARGET = 0.80

MAX_N = 2_000
loads = st.floats(min_value=0.01, max_value=1_900.0, allow_nan=False, allow_infinity=False)
agents = st.integers(min_value=0, max_value=MAX_N)
handle_times = st.floats(min_value=1.0, max_value=3_600.0, allow_nan=False)
thresholds = st.floats(min_value=0.0, max_value=600.0, allow_nan=False)
targets = st.floats(min_value=0.01, max_value=0.99, allow_nan=False)
# At least 0.5, so that even 1,900 Erlangs fit within the searches' max_agents.
occupancies = st.floats(min_value=0.5, max_value=1.0, allow_nan=False)
shrinkages = st.floats(min_value=0.0, max_value=0.9, allow_nan=False)

# Each evaluation walks the recurrence up to n (about 0.1 ms at n = 2,000): no deadline, so that
# a slow CI machine cannot turn a long loop into a flaky failure.
LONG = settings(max_examples=150, deadline=None)


def meets(n: int, a: float, *, aht_s: float, t_s: float, target: float, max_occ: float) -> bool:
    return service_level(n, a, aht_s, t_s) >= target and a / n <= max_occ


@st.composite
def load_and_agents(draw: st.DrawFn) -> tuple[float, int]:
    """A load and a size below 2,000 near it, where Erlang C changes fastest (uniform sizes
    would land far into the unstable or the saturated region most of the time)."""
    a = draw(loads)
    offset = draw(st.integers(min_value=-3, max_value=3 * math.isqrt(math.ceil(a)) + 5))
    return a, min(max(math.floor(a) + offset, 0), MAX_N - 1)


# --- the reference vector ------------------------------------------------------------------------


def test_reference_vector_needs_fourteen_responders_to_the_printed_precision() -> None:
    answer = required(REF_RATE, REF_AHT, REF_T, REF_TARGET)

    assert answer.offered_load == pytest.approx(10.0)
    assert answer.agents == 14
    assert round(answer.p_wait, 5) == 0.17413
    assert round(answer.service_level, 5) == 0.88835
    assert round(answer.asa_s, 3) == 7.836
    assert answer.occupancy == pytest.approx(10 / 14)
    assert answer.rostered == 14


def test_reference_vector_is_reproduced_by_the_stand_alone_functions() -> None:
    a = REF_RATE * REF_AHT

    assert round(p_wait(14, a), 5) == 0.17413
    assert round(service_level(14, a, REF_AHT, REF_T), 5) == 0.88835
    assert round(asa(14, a, REF_AHT), 3) == 7.836


def test_reference_vector_misses_the_target_with_thirteen_responders() -> None:
    assert service_level(13, REF_RATE * REF_AHT, REF_AHT, REF_T) < REF_TARGET


def exact_p_wait(n: int, a: float) -> float:
    """Erlang C from its textbook formula in exact rational arithmetic: A^n/n! is harmless here."""
    load = Fraction(a)
    term, below = Fraction(1), Fraction(0)  # A^k / k!, and the sum of those for k < n
    for k in range(n):
        below += term
        term = term * load / (k + 1)
    waiting = term * n / (n - load)
    return float(waiting / (below + waiting))


@pytest.mark.parametrize(
    ("n", "a"), [(14, 10.0), (171, 170.5), (600, 590.25), (1_812, 1_800.0), (2_000, 1_900.0)]
)
def test_probability_of_waiting_matches_exact_rational_arithmetic_past_the_overflow_point(
    n: int, a: float
) -> None:
    assert p_wait(n, a) == pytest.approx(exact_p_wait(n, a), rel=1e-12)


def test_one_responder_with_any_load_below_one_erlang_waits_with_probability_of_the_load() -> None:
    # M/M/1: C(1, A) = A, the utilisation.
    assert p_wait(1, 0.25) == pytest.approx(0.25)
    assert p_wait(1, 0.9) == pytest.approx(0.9)


# --- properties of the stand-alone functions ---------------------------------------------------


@LONG
@given(a=loads, n=st.integers(min_value=0, max_value=MAX_N - 1), h=handle_times, t=thresholds)
def test_service_level_never_falls_when_a_responder_is_added(
    a: float, n: int, h: float, t: float
) -> None:
    assert service_level(n + 1, a, h, t) >= service_level(n, a, h, t)


@LONG
@given(case=load_and_agents(), h=handle_times, t=thresholds)
def test_service_level_rises_with_each_responder_added_just_above_the_load(
    case: tuple[float, int], h: float, t: float
) -> None:
    a, n = case
    here, more = service_level(n, a, h, t), service_level(n + 1, a, h, t)

    assert more >= here
    if n + 1 > a and here < 1.0 - 1e-9:  # not where both round to 1.0 or its neighbour
        assert more > here


@LONG
@given(case=st.one_of(load_and_agents(), st.tuples(loads, st.integers(0, MAX_N - 1))))
def test_probability_of_waiting_is_a_probability_that_never_rises_with_responders(
    case: tuple[float, int],
) -> None:
    a, n = case
    here, more = p_wait(n, a), p_wait(n + 1, a)

    assert 0.0 <= here <= 1.0
    assert 0.0 <= more <= 1.0
    assert more <= here


@LONG
@given(a=loads, n=agents, h=handle_times, t=thresholds)
def test_every_figure_is_finite_up_to_two_thousand_responders_unless_the_queue_is_unstable(
    a: float, n: int, h: float, t: float
) -> None:
    c, sl, speed = p_wait(n, a), service_level(n, a, h, t), asa(n, a, h)

    assert math.isfinite(c)
    assert 0.0 <= sl <= 1.0
    if n > a:
        assert math.isfinite(speed)
        assert speed >= 0.0
    else:
        assert speed == math.inf


@settings(max_examples=60, deadline=None)
@given(a=st.floats(min_value=1_700.0, max_value=1_900.0), extra=st.integers(0, 100))
def test_large_loads_above_the_factorial_overflow_point_give_proper_probabilities(
    a: float, extra: int
) -> None:
    # A^n / n! overflows a float64 near n = 170; the recurrence must not.
    n = math.floor(a) + 1 + extra
    c = p_wait(n, a)

    assert 0.0 < c < 1.0
    assert 0.0 < service_level(n, a, 180.0, 20.0) < 1.0


def test_service_level_with_no_threshold_is_the_probability_of_not_waiting() -> None:
    assert service_level(14, 10.0, 180.0, 0.0) == pytest.approx(1.0 - p_wait(14, 10.0))


# --- the unstable queue and no load ------------------------------------------------------------


@pytest.mark.parametrize(("n", "a"), [(10, 10.0), (9, 10.0), (0, 0.5), (1_800, 1_800.0)])
def test_an_unstable_queue_always_waits_never_meets_a_threshold_and_never_answers(
    n: int, a: float
) -> None:
    assert p_wait(n, a) == 1.0
    assert service_level(n, a, 180.0, 20.0) == 0.0
    assert asa(n, a, 180.0) == math.inf


@pytest.mark.parametrize("a", [0.0, -3.0])
def test_no_load_never_waits(a: float) -> None:
    assert p_wait(5, a) == 0.0
    assert p_wait(0, a) == 0.0
    assert service_level(5, a, 180.0, 20.0) == 1.0
    assert asa(5, a, 180.0) == 0.0


@pytest.mark.parametrize(("rate", "aht"), [(0.0, 180.0), (-0.1, 180.0), (0.1, 0.0), (0.1, -5.0)])
def test_no_arrivals_or_no_handle_time_is_no_load_and_staffs_the_floor(
    rate: float, aht: float
) -> None:
    answer = required(rate, aht, 20.0, 0.8, floor=3, shrinkage=0.25)

    assert answer == Staffing(
        offered_load=0.0,
        agents=3,
        rostered=4,
        p_wait=0.0,
        service_level=1.0,
        asa_s=0.0,
        occupancy=0.0,
    )


def test_a_load_beyond_max_agents_returns_max_agents_as_an_unstable_queue() -> None:
    answer = required(10.0, 180.0, 20.0, 0.8, max_agents=1_000)

    assert answer.agents == 1_000
    assert answer.p_wait == 1.0
    assert answer.service_level == 0.0
    assert answer.asa_s == math.inf
    assert answer.occupancy == pytest.approx(1.8)


def test_a_load_too_large_to_represent_returns_max_agents_instead_of_failing() -> None:
    answer = required(1e200, 1e200, 20.0, 0.8)

    assert answer.agents == 10_000
    assert answer.service_level == 0.0


def test_a_target_out_of_reach_within_max_agents_stops_at_max_agents() -> None:
    # 10 Erlangs with 12 responders: stable, but occupancy 0.83 > 0.5 and SL short of 0.999.
    answer = required(REF_RATE, REF_AHT, REF_T, 0.999, max_occupancy=0.5, max_agents=12)

    assert answer.agents == 12
    assert answer.service_level < 0.999
    assert answer.p_wait == pytest.approx(p_wait(12, 10.0))
    assert math.isfinite(answer.asa_s)


# --- the staffing search -----------------------------------------------------------------------


@LONG
@given(
    a=loads,
    h=handle_times,
    t=thresholds,
    target=targets,
    max_occ=occupancies,
    floor=st.integers(min_value=1, max_value=5),
)
def test_required_staffs_the_fewest_responders_that_meet_target_and_occupancy(
    *, a: float, h: float, t: float, target: float, max_occ: float, floor: int
) -> None:
    rate = a / h
    answer = required(rate, h, t, target, max_occupancy=max_occ, floor=floor, max_agents=MAX_N * 2)
    load = rate * h
    n = answer.agents

    assert answer.offered_load == load
    assert floor <= n < MAX_N * 2
    criteria = {"aht_s": h, "t_s": t, "target": target, "max_occ": max_occ}
    assert meets(n, load, **criteria)
    assert n == floor or not meets(n - 1, load, **criteria)
    # The figures are those of the stand-alone functions at the answer, to the last bit.
    assert answer.p_wait == p_wait(n, load)
    assert answer.service_level == service_level(n, load, h, t)
    assert answer.asa_s == asa(n, load, h)
    assert answer.occupancy == load / n


@LONG
@given(a=st.floats(min_value=10.0, max_value=1_900.0), t=thresholds, target=targets)
def test_required_agrees_with_the_square_root_staffing_rule(
    a: float, t: float, target: float
) -> None:
    # Halfin-Whitt: n = A + beta * sqrt(A), with beta below 3 for any target up to 0.99.
    answer = required(a / 180.0, 180.0, t, target, max_occupancy=1.0, floor=1)

    assert a < answer.agents <= a + 3.0 * math.sqrt(a) + 1.0


@LONG
@given(a=loads, h=handle_times, t=thresholds, target=targets, max_occ=occupancies)
def test_required_is_finite_for_loads_up_to_nineteen_hundred_erlangs(
    a: float, h: float, t: float, target: float, max_occ: float
) -> None:
    answer = required(a / h, h, t, target, max_occupancy=max_occ)

    for value in (answer.offered_load, answer.p_wait, answer.service_level, answer.asa_s):
        assert math.isfinite(value)
    assert 0.0 < answer.occupancy <= max_occ


# --- floor and shrinkage -----------------------------------------------------------------------


@pytest.mark.parametrize("floor", [2, 4])
def test_a_quiet_line_is_never_staffed_below_the_floor(floor: int) -> None:
    # One ten-minute call an hour: the model alone would answer one responder.
    rate = 1 / 3600
    assert required(rate, 600.0, 20.0, 0.8, floor=1).agents == 1
    answer = required(rate, 600.0, 20.0, 0.8, floor=floor)

    assert answer.agents == floor
    assert answer.rostered == floor
    assert answer.p_wait == pytest.approx(p_wait(floor, rate * 600.0))


def test_the_default_floor_is_two_responders() -> None:
    assert required(1 / 3600, 600.0, 20.0, 0.8).agents == 2


@pytest.mark.parametrize(
    ("shrinkage", "rostered"), [(0.0, 14), (0.3, 20), (0.2, 18), (0.5, 28), (0.65, 40)]
)
def test_shrinkage_rosters_enough_people_for_the_agents_needed(
    shrinkage: float, rostered: int
) -> None:
    answer = required(REF_RATE, REF_AHT, REF_T, REF_TARGET, shrinkage=shrinkage)

    assert answer.agents == 14
    assert answer.rostered == rostered


def test_shrinkage_does_not_round_a_whole_headcount_up_for_a_floating_point_error() -> None:
    # 465 / (1 - 0.07) is 500.00000000000006 in binary floating point.
    assert 465 / (1 - 0.07) > 500
    answer = required(0.0, 0.0, 20.0, 0.8, floor=465, shrinkage=0.07)

    assert answer.rostered == 500


@settings(max_examples=200, deadline=None)
@given(floor=st.integers(min_value=1, max_value=MAX_N), shrinkage=shrinkages)
def test_shrinkage_rosters_the_smallest_headcount_whose_available_share_covers_the_agents(
    floor: int, shrinkage: float
) -> None:
    answer = required(0.0, 0.0, 20.0, 0.8, floor=floor, shrinkage=shrinkage)
    available = 1.0 - shrinkage

    assert answer.rostered >= answer.agents == floor
    assert answer.rostered * available >= floor * (1 - 1e-9)
    assert (answer.rostered - 1) * available < floor


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"t_s": -1.0}, "t_s"),
        ({"t_s": math.nan}, "t_s"),
        ({"target": 0.0}, "target"),
        ({"target": 1.0}, "target"),
        ({"target": 1.5}, "target"),
        ({"target": math.nan}, "target"),
        ({"max_occupancy": 0.0}, "max_occupancy"),
        ({"max_occupancy": 1.01}, "max_occupancy"),
        ({"shrinkage": -0.1}, "shrinkage"),
        ({"shrinkage": 1.0}, "shrinkage"),
        ({"floor": 0}, "floor"),
        ({"max_agents": 1}, "max_agents"),
        ({"rate_per_s": math.nan}, "rate_per_s"),
        ({"rate_per_s": math.inf}, "rate_per_s"),
        ({"aht_s": math.nan}, "aht_s"),
    ],
)
def test_required_rejects_arguments_that_make_no_sense_naming_the_argument(
    kwargs: dict[str, Any], name: str
) -> None:
    arguments: dict[str, Any] = {
        "rate_per_s": REF_RATE,
        "aht_s": REF_AHT,
        "t_s": REF_T,
        "target": REF_TARGET,
    } | kwargs
    with pytest.raises(ValueError, match=name):
        required(**arguments)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: p_wait(-1, 10.0), "n"),
        (lambda: p_wait(5, math.nan), "a"),
        (lambda: service_level(-1, 10.0, 180.0, 20.0), "n"),
        (lambda: service_level(14, 10.0, 0.0, 20.0), "aht_s"),
        (lambda: service_level(14, 10.0, -180.0, 20.0), "aht_s"),
        (lambda: service_level(14, 10.0, 180.0, -20.0), "t_s"),
        (lambda: service_level(14, 10.0, 180.0, math.inf), "t_s"),
        (lambda: asa(14, math.inf, 180.0), "a"),
        (lambda: asa(14, 10.0, 0.0), "aht_s"),
    ],
)
def test_the_erlang_functions_reject_arguments_that_make_no_sense_naming_the_argument(
    call: Any, name: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{name} "):
        call()
