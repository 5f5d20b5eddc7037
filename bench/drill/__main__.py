"""`python -m bench.drill`: the capacity ramp and its table (run as root: it starts a PBX
instance and a Postgres cluster of its own, and uses loopback addresses 127.0.88.1-2)."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import sys

from bench.drill.run import LAG_TARGET_S, Plan, Step, drill

CPU_TARGET = 0.10  # of one core, at the top step


def _ms(seconds: float | None, digits: int = 0) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.{digits}f}"


def _pct(share: float | None) -> str:
    return "n/a" if share is None or math.isnan(share) else f"{share:.1%}"


def _row(step: Step, base: Step | None) -> str:
    v = step.verdict
    assert v is not None
    scrapes = sorted(step.scrape_s)
    scrape = f"{_ms(scrapes[len(scrapes) // 2], 1)} / {_ms(scrapes[-1], 1)}" if scrapes else "n/a"
    records = f"{v.correct}/{v.calls}" + ("" if v.all_correct else " ✗")
    ratio = f"{step.calls_per_s / base.calls_per_s:.2f}" if base and base.calls_per_s else "n/a"
    base_rate = f"{base.calls_per_s:.2f}" if base else "n/a"
    return (
        f"| {step.concurrency} | {step.peak_concurrency} | {step.calls_per_s:.2f} | {base_rate}"
        f" | {ratio} | {_pct(step.daemon_cpu)}"
        f" | {_ms(step.lag_p50_s, 1)} / {_ms(step.lag_p99_s, 1)}"
        f" | {_pct(step.lag_within_target)} | {scrape} | {_ms(step.write_p50_s, 1)} /"
        f" {_ms(step.write_p99_s, 1)} | {records} | {v.answered_by_phone}"
        f" | {_pct(step.asterisk_cpu)} / {_pct(base.asterisk_cpu) if base else 'n/a'}"
        f" | {step.load[0].split()[0]} → {step.load[1].split()[0]} |"
    )


HEADER = (
    "| calls up (target) | peak | calls/s | calls/s without hotline | ratio | hotline CPU"
    " (one core) | event lag p50 / p99 (ms) | events ≤ 100 ms | /metrics scrape p50 / max (ms)"
    " | Postgres write p50 / p99 (ms) | correct records | answered | Asterisk CPU with / without"
    " | load avg (1 min) |\n" + "|---" * 14 + "|"
)


def report(steps: list[tuple[Step, Step | None]], command: str) -> bool:
    print(f"\nCapacity drill: `{command}`")
    print(f"{os.cpu_count()} cores; /proc/loadavg at start and end of each step in the last column")
    print()
    print(HEADER)
    for step, base in steps:
        print(_row(step, base))
    ok = True
    print()
    for step, base in steps:
        v = step.verdict
        assert v is not None
        worst = ", ".join(f"{k} {e:.3f} s" for k, e in sorted(v.worst.items()))
        print(
            f"step {step.concurrency}: {v.calls} calls in {step.elapsed_s:.0f} s, {v.rows} records,"
            f" {v.correct} correct; largest |record - SIPp|: {worst or 'n/a'};"
            f" SIPp wait p50/p99 {_ms(step.sipp_wait_p50_s)}/{_ms(step.sipp_wait_p99_s)} ms"
            + (
                f" (without hotline {_ms(base.sipp_wait_p50_s)}/{_ms(base.sipp_wait_p99_s)} ms,"
                f" {base.verdict.answered_by_phone if base.verdict else 0}/{base.calls} answered)"
                if base
                else ""
            )
            + f"; {step.lag_events} events, {step.writes} writes, dropped {step.dropped or 0};"
            f" SIPp CPU {_pct(step.sipp_cpu)}; carrier exit {step.carrier_exit},"
            f" {step.carrier_errors} error lines"
        )
        for problem in v.problems[:10]:
            print(f"    {problem}")
        if len(v.problems) > 10:
            print(f"    ... and {len(v.problems) - 10} more")
        ok = ok and v.all_correct
    top = steps[-1][0]
    lag_ok = top.lag_within_target is not None and top.lag_within_target >= 0.99
    cpu_ok = top.daemon_cpu is not None and top.daemon_cpu < CPU_TARGET
    print(
        f"\nTargets at {top.concurrency} calls up: hotline CPU < {CPU_TARGET:.0%} of one core:"
        f" {'met' if cpu_ok else 'NOT met'} ({_pct(top.daemon_cpu)}); event lag p99 <"
        f" {LAG_TARGET_S * 1000:.0f} ms: {'met' if lag_ok else 'NOT met'}"
        f" ({_pct(top.lag_within_target)} of events within); every record correct:"
        f" {'yes' if ok else 'NO'}"
    )
    return ok and lag_ok and cpu_ok


async def ramp(args: argparse.Namespace) -> list[tuple[Step, Step | None]]:
    plan = Plan(ring_s=args.ring, talk_s=args.talk)
    out: list[tuple[Step, Step | None]] = []
    async with drill(plan, max(args.steps)) as rig:
        print(
            f"rig: {len(rig.ids)} responders, calls of {plan.call_s:.1f} s"
            f" (greeting {plan.greeting_s:.1f} s, ring {plan.ring_s} s, talk {plan.talk_s} s),"
            f" wrap-up {plan.wrapup_s:.0f} s",
            flush=True,
        )
        for n, concurrency in enumerate(args.steps, 1):
            step = await rig.step(concurrency, args.hold)
            print(f"  step {concurrency} with hotline: {_brief(step)}", flush=True)
            base = None
            if args.baseline:
                await rig.stop_daemon()
                await asyncio.sleep(plan.wrapup_s)  # the step's responders out of wrap-up
                base = await rig.step(concurrency, args.hold)
                print(f"  step {concurrency} without hotline: {_brief(base)}", flush=True)
                if n < len(args.steps):
                    await rig.start_daemon()
                    await asyncio.sleep(plan.wrapup_s)
            out.append((step, base))
    return out


def _brief(step: Step) -> str:
    v = step.verdict
    assert v is not None
    return (
        f"{v.calls} calls, {step.calls_per_s:.2f} calls/s, peak {step.peak_concurrency} up,"
        f" {v.answered_by_phone} answered,"
        + (f" {v.correct} correct records," if step.with_daemon else "")
        + f" hotline CPU {_pct(step.daemon_cpu)}, lag p99 {_ms(step.lag_p99_s, 1)} ms,"
        f" load {step.load[1]}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drill", description=(sys.modules["bench.drill"].__doc__ or "")
    )
    parser.add_argument(
        "--steps",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[25, 50, 100, 150, 200],
        help="calls up at once, per step (25,50,100,150,200)",
    )
    parser.add_argument("--hold", type=float, default=60, help="seconds of calls per step (60)")
    parser.add_argument("--talk", type=float, default=20.5, help="talk time, s (20.5)")
    parser.add_argument("--ring", type=float, default=0.5, help="ring time, s (0.5)")
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the same-run baseline steps without hotline",
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "bench.drill", *(sys.argv[1:] if argv is None else argv)])
    steps = asyncio.run(ramp(args))
    return 0 if report(steps, command) else 1


if __name__ == "__main__":
    sys.exit(main())
