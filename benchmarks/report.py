"""Turning repetitions into the printed tables, the target checks and the JSON file.

Every ratio is paired: for repetition r, ``wall(engine, r) / wall(asyncio, r)``, so a slow
patch of the shared machine moves both sides of a pair. It reads "times slower than the
hand-written asyncio baseline" whatever the unit, including ops/s and runs/s.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

OK = "ok"
# Objects a job leaves alive, per job, from which the table notes it (retained run history,
# leaks); fewer is noise such as caches filled on first use.
KEPT_NOTE = 100


@dataclass
class Rep:
    """One timed run of one case on one engine. ``rep`` is -1 for the warm-up."""

    rep: int
    status: str  # ok | INCORRECT | ERROR | HANG
    wall: float  # seconds for all the loops
    cpu: float
    detail: str = ""
    loops: int = 1  # times the job ran in this repetition


@dataclass
class CaseResult:
    """Every repetition of one case, by engine name."""

    key: str
    scenario: str
    unit: str
    units: int
    labels: dict[str, str]
    reps: dict[str, list[Rep]] = field(default_factory=dict)
    warmups: dict[str, Rep] = field(default_factory=dict)
    loops: dict[str, int] = field(default_factory=dict)
    # gc-tracked objects still alive after a job returned, per job (last repetition)
    kept: dict[str, float] = field(default_factory=dict)

    def value(self, rep: Rep) -> float:
        """The repetition in the case's unit: us per unit, or units per second."""
        if self.unit.startswith("us/"):
            return rep.wall * 1e6 / (self.units * rep.loops)
        return self.units * rep.loops / rep.wall

    def values(self, engine: str) -> list[float]:
        return [self.value(r) for r in self.reps.get(engine, []) if r.status == OK]

    def paired(self, num: str, den: str) -> list[float]:
        """wall(num) / wall(den) per job, for every repetition where both were correct."""
        a = {r.rep: r.wall / r.loops for r in self.reps.get(num, []) if r.status == OK}
        b = {r.rep: r.wall / r.loops for r in self.reps.get(den, []) if r.status == OK}
        return [a[i] / b[i] for i in sorted(a.keys() & b.keys())]

    def failures(self, engine: str) -> list[Rep]:
        runs = [*([self.warmups[engine]] if engine in self.warmups else []), *self.reps[engine]]
        return [r for r in runs if r.status != OK]

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "scenario": self.scenario,
            "unit": self.unit,
            "units": self.units,
            "engines": {
                name: {
                    "label": self.labels[name],
                    "warmup": vars(self.warmups[name]) if name in self.warmups else None,
                    "loops": self.loops.get(name),
                    "kept_objects_per_job": self.kept.get(name),
                    "reps": [vars(r) for r in reps],
                    "values": self.values(name),
                }
                for name, reps in self.reps.items()
            },
        }


@dataclass
class Memory:
    """S4 peak-RSS growth per run (KiB), one value per fresh child process."""

    runs: int
    kib_per_run: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)


def fmt(v: float) -> str:
    """Three significant digits, thousands separated."""
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def span(values: Sequence[float], f: Callable[[float], str] = fmt) -> str:
    """``median [min-max]``, or ``-`` when there is nothing to summarize."""
    if not values:
        return "-"
    return f"{f(statistics.median(values))} [{f(min(values))}-{f(max(values))}]"


def _ratio(v: float) -> str:
    return f"{v:.2f}"


def _correct(result: CaseResult, engine: str) -> str:
    bad = result.failures(engine)
    if not bad:
        return "yes"
    counts: dict[str, int] = {}
    for r in bad:
        counts[r.status] = counts.get(r.status, 0) + 1
    return "NO: " + ", ".join(f"{n} {status}" for status, n in counts.items())


def case_table(result: CaseResult, baseline: str) -> list[str]:
    """The markdown table of one case, then one line per failed repetition."""
    lines = [
        "| Case | Engine | median | min | max | unit | x asyncio: median [min-max] "
        "| riverbed vs llama | correct | loops |",
        "|---|---|---:|---:|---:|---|---|---|---|---:|",
    ]
    for name in result.reps:
        values = result.values(name)
        cells = [fmt(statistics.median(values)), fmt(min(values)), fmt(max(values))] if values \
            else ["-", "-", "-"]
        if name == baseline:
            vs_base = "1 (baseline)"
        elif baseline in result.reps:
            vs_base = span(result.paired(name, baseline), _ratio) if values else "n/a"
        else:
            vs_base = "n/a (no baseline)"
        vs_llama = "-"
        if name == "riverbed" and "llama" in result.reps:
            speedups = result.paired("llama", "riverbed")
            vs_llama = f"{span(speedups, _ratio)} x faster" if speedups else "n/a"
        lines.append(
            f"| {result.key} | {result.labels[name]} | {' | '.join(cells)} | {result.unit} "
            f"| {vs_base} | {vs_llama} | {_correct(result, name)} | {result.loops.get(name, '-')} |"
        )
    for name in result.reps:
        for r in result.failures(name):
            where = "warm-up" if r.rep < 0 else f"rep {r.rep}"
            lines.append(f"- {result.labels[name]}, {where}: {r.status}: {r.detail}")
    for name, kept in result.kept.items():
        if kept >= KEPT_NOTE:
            lines.append(f"- {result.labels[name]} keeps {kept:,.0f} gc-tracked objects per job "
                         "after it returned (last repetition, after gc.collect())")
    return lines


def growth(medians: Sequence[float]) -> float:
    """How much dearer an event gets as K grows: max over K of cost(K) / cost(smallest K).

    A fixed per-run cost makes small runs dearer per event; that is not growth and does not
    count, while a cost that rises with K (llama-index-workflows is quadratic) does.
    """
    return max(medians) / medians[0]


def scaling_table(results: Sequence[CaseResult]) -> list[str]:
    """S2 per-event cost by K side by side, with its growth and max/min across K."""
    engines = list(dict.fromkeys(name for r in results for name in r.reps))
    head = " | ".join(f"K={r.units:,} us/event" for r in results)
    lines = [
        f"| Engine | {head} | growth: max cost(K) / cost(K={results[0].units:,}) | max/min |",
        "|---|" + "---:|" * (len(results) + 2),
    ]
    for name in engines:
        medians = [statistics.median(v) if (v := r.values(name)) else None for r in results]
        cells = [fmt(m) if m is not None else "-" for m in medians]
        present = [m for m in medians if m is not None]
        full = len(present) == len(medians) > 1
        grew = _ratio(growth(present)) if full else "-"
        spread = _ratio(max(present) / min(present)) if full else "-"
        label = next(r.labels[name] for r in results if name in r.labels)
        lines.append(f"| {label} | {' | '.join(cells)} | {grew} | {spread} |")
    return lines


def memory_table(memory: Memory, labels: dict[str, str], baseline: str) -> list[str]:
    lines = [
        f"S4 peak-RSS growth per run (R = {memory.runs:,} concurrent runs, "
        "one fresh child process per sample):",
        "",
        "| Engine | KiB/run: median [min-max] | RSS x asyncio | samples |",
        "|---|---|---:|---:|",
    ]
    base = memory.kib_per_run.get(baseline, [])
    for name, values in memory.kib_per_run.items():
        rel = "-"
        if values and base and name != baseline:
            rel = _ratio(statistics.median(values) / statistics.median(base))
        elif name == baseline and values:
            rel = "1 (baseline)"
        lines.append(f"| {labels[name]} | {span(values)} | {rel} | {len(values)} |")
    for name, problems in memory.failures.items():
        lines.extend(f"- {labels[name]}: {p}" for p in problems)
    return lines


@dataclass(frozen=True)
class Target:
    """One goal for riverbed, checked against the medians of this run."""

    name: str
    key: str  # the case it reads; for "flat", the prefix of the S2 scaling cases
    limit: float
    kind: str  # "x asyncio" (<= limit), "vs llama" (>= limit), "flat" (<= limit), "memory"


TARGETS = (
    Target("S1 riverbed x asyncio", "S1", 3, "x asyncio"),
    Target("S2/w=4 riverbed x asyncio", "S2/w=4", 5, "x asyncio"),
    Target("S2/w=16 riverbed x asyncio", "S2/w=16", 5, "x asyncio"),
    Target("S2 riverbed us/event growth from smallest to largest K", "S2 K=", 1.5, "flat"),
    Target("S3 riverbed x asyncio", "S3", 2, "x asyncio"),
    Target("S4 riverbed x asyncio (runs/s)", "S4", 3, "x asyncio"),
    Target("S4 riverbed peak RSS per run x asyncio", "S4", 1.5, "memory"),
    Target("S5 riverbed x asyncio", "S5", 3, "x asyncio"),
    Target("S1 riverbed vs llama", "S1", 10, "vs llama"),
    Target("S2/w=4 riverbed vs llama", "S2/w=4", 10, "vs llama"),
    Target("S2/w=16 riverbed vs llama", "S2/w=16", 10, "vs llama"),
    Target("S5 riverbed vs llama", "S5", 10, "vs llama"),
)


def _measure(target: Target, found: list[CaseResult], memory: Memory | None,
             baseline: str) -> tuple[float | None, str]:
    """The measured figure for a target, or None and why it cannot be judged."""
    if any("riverbed" in r.reps and r.failures("riverbed") for r in found):
        return None, "riverbed had failed repetitions (see the tables)"
    if target.kind == "x asyncio":
        ratios = found[0].paired("riverbed", baseline)
        return (statistics.median(ratios), "x asyncio") if ratios else (None, "no paired reps")
    if target.kind == "vs llama":
        speedups = found[0].paired("llama", "riverbed")
        return (statistics.median(speedups), "x faster") if speedups \
            else (None, "llama not measured")
    if target.kind == "flat":
        medians = [statistics.median(v) for r in found if (v := r.values("riverbed"))]
        return (growth(medians), "x (max cost(K) / cost(smallest K))") \
            if len(medians) == len(found) > 1 else (None, "fewer than 2 sizes")
    if memory is None:
        return None, "memory not measured"
    if memory.failures.get("riverbed"):
        return None, "riverbed memory samples failed (see the S4 memory table)"
    mine, base = memory.kib_per_run.get("riverbed"), memory.kib_per_run.get(baseline)
    if not mine or not base:
        return None, "no memory samples"
    return statistics.median(mine) / statistics.median(base), "x asyncio"


def check_targets(results: Sequence[CaseResult], memory: Memory | None,
                  baseline: str) -> list[dict[str, object]]:
    """PASS / MISS / SKIP for every target."""
    out: list[dict[str, object]] = []
    for target in TARGETS:
        if target.kind == "flat":
            found = [r for r in results if r.key.startswith(target.key)]
        else:
            found = [r for r in results if r.key == target.key]
        status, shown, measured = "SKIP", "", None
        if not found:
            shown = "scenario not run"
        elif not any("riverbed" in r.reps for r in found):
            shown = "riverbed not measured"
        elif target.kind in ("x asyncio", "memory") and not any(baseline in r.reps for r in found):
            shown = "asyncio baseline was not run"
        else:
            measured, what = _measure(target, found, memory, baseline)
            if measured is None:
                status, shown = ("MISS", what) if "failed" in what else ("SKIP", what)
            else:
                ok = measured >= target.limit if target.kind == "vs llama" \
                    else measured <= target.limit
                bound = ">=" if target.kind == "vs llama" else "<="
                status = "PASS" if ok else "MISS"
                shown = f"{measured:.2f} {what} (target {bound} {target.limit:g})"
        out.append({"target": target.name, "status": status, "measured": measured,
                    "limit": target.limit, "detail": shown})
    return out


def target_lines(checks: Sequence[dict[str, object]]) -> list[str]:
    return [f"{c['status']:<4}  {c['target']}: {c['detail']}" for c in checks]
