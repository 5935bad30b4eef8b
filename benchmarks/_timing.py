"""Timing shared by the benchmark scripts: alternating rounds, medians of per-round ratios, CPU time, load average.

A benchmark compares a baseline with candidates in one process:

    from _timing import compare, print_table, load_average

    results = compare({"baseline": run_old, "candidate": run_new}, rounds=7)
    print_table(results, baseline="baseline")

Each round runs every setting once, in an order rotated from round to round, so a burst of load from other
processes hits all settings alike; each setting's time in a round is divided by the baseline's time in the same
round, and the table shows the median of those per-round ratios with their min-max. CPU time (`time.process_time`,
all threads of the process) is measured beside wall time: on a shared machine it moves much less with the load than
wall time does, so its ratio is the figure that reproduces. `load_average()` goes in every printed result.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timings:
    """Wall and CPU seconds of one setting, one entry per round."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def measure(function: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def compare(settings: dict[str, Callable[[], object]], rounds: int = 5, warmup: int = 1) -> dict[str, Timings]:
    """Times every setting once per round, alternating, after `warmup` untimed calls of each."""
    for function in settings.values():
        for _ in range(warmup):
            function()
    names = list(settings)
    results = {name: Timings() for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = measure(settings[name])
            results[name].wall.append(wall)
            results[name].cpu.append(cpu)
    return results


def median_range(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def ratios(results: dict[str, Timings], name: str, baseline: str, kind: str = "wall") -> list[float]:
    """Per-round time ratios name / baseline (below 1: faster than the baseline)."""
    return [a / b for a, b in zip(getattr(results[name], kind), getattr(results[baseline], kind))]


def format_ratio(values: list[float]) -> str:
    median, low, high = median_range(values)
    return f"{median:.2f}x ({low:.2f}-{high:.2f})"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages and the CPU count, for the printed results."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def table(results: dict[str, Timings], baseline: str | None = None, unit: float = 1.0, unit_name: str = "s") -> str:
    """A markdown table: median (min-max) wall and CPU time of each setting, and with `baseline` the medians
    (min-max) of the per-round time ratios against it. Times are divided by `unit` (e.g. clips per call)."""
    header = f"| setting | wall {unit_name}, median (min-max) | CPU {unit_name}, median (min-max) |"
    rule = "|---|---:|---:|"
    if baseline is not None:
        header += f" wall vs {baseline} | CPU vs {baseline} |"
        rule += "---:|---:|"
    lines = [header, rule]
    for name, timings in results.items():
        cells = []
        for values in (timings.wall, timings.cpu):
            median, low, high = median_range([value / unit for value in values])
            cells.append(f"{median:.4g} ({low:.4g}-{high:.4g})")
        if baseline is not None:
            cells += [format_ratio(ratios(results, name, baseline, kind)) for kind in ("wall", "cpu")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_table(results: dict[str, Timings], baseline: str | None = None, **kwargs) -> None:
    """Prints `table(...)` with the number of rounds and the load average at the end of the runs."""
    rounds = len(next(iter(results.values())).wall)
    print(table(results, baseline, **kwargs))
    print(f"{rounds} alternating rounds; {load_average()}")
