"""riverbed benchmark harness: S1-S5 on each engine against the asyncio baseline (S6).

Run it through ``benchmarks/run``, which sets up ``benchmarks/.venv``::

    benchmarks/run [--quick] [--only S1,S2] [--engines asyncio,riverbed,llama] [--json PATH]

Method: one process, one event loop. For each case every engine is prepared (untimed) and
warmed up once at reduced size, then the repetitions are interleaved across engines with the
order rotated each repetition and ``gc.collect()`` before each. Every repetition checks its
result under ``asyncio.wait_for``; INCORRECT, ERROR and HANG are reported, never dropped.
S4 memory is measured in fresh child processes (``--memory-child``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import baseline
import engines
import report
import scenarios
from engines import BASELINE, Engine, EngineUnavailable
from report import CaseResult, Memory, Rep
from scenarios import CHAIN_STEPS, Job

SCENARIOS = ("S1", "S2", "S3", "S4", "S5")
# Calibrate loops with a full-size run unless the warm-up predicts one takes this many times
# the minimum repetition. Generous, because warm-ups include one-time costs and a quadratic
# engine's small warm-up underestimates its full size.
PROBE_BELOW = 10


@dataclass(frozen=True)
class Sizes:
    """Work per repetition (and the smaller warm-up) for each scenario."""

    reps: int = 5
    s1_runs: int = 200
    s1_warm: int = 20
    s2_events: int = 1000
    s2_workers: tuple[int, ...] = (4, 16)
    s2_warm: int = 100
    # Scaling: per-event cost at each K with 4 workers. llama-index-workflows is quadratic in K
    # (minutes at K=10,000), so it runs at the middle size only.
    scale_events: tuple[int, ...] = (100, 1000, 10000)
    scale_llama: tuple[int, ...] = (1000,)
    s3_workers: int = 200
    s3_increments: int = 50
    s3_warm_increments: int = 5
    s4_runs: int = 2000
    s4_warm: int = 100
    s5_events: int = 10000
    s5_warm: int = 1000
    memory_samples: int = 3
    # A fast engine repeats the job within a repetition until it lasts about this long.
    min_rep_seconds: float = 0.2
    max_loops: int = 1000


FULL = Sizes()
QUICK = Sizes(
    reps=2, s1_runs=20, s1_warm=5, s2_events=100, s2_warm=20,
    scale_events=(50, 200, 1000), scale_llama=(200,),
    s3_increments=5, s3_warm_increments=1, s4_runs=200, s4_warm=20,
    s5_events=1000, s5_warm=100, memory_samples=1, min_rep_seconds=0.05,
)


@dataclass(frozen=True)
class Case:
    """One measured configuration: a builder, its sizes and the work units per repetition."""

    key: str
    scenario: str
    builder: str  # function name, the same in scenarios.py and baseline.py
    unit: str
    units: int  # work units (steps, events, increments, runs) of one job at full size
    warm_units: int
    params: dict[str, Any]
    warm_params: dict[str, Any]
    only: frozenset[str] | None = None  # engines that run it; None means all

    def job(self, engine: Engine, warm: bool = False) -> Job:
        params = self.warm_params if warm else self.params
        if engine.api is None:
            return getattr(baseline, self.builder)(**params)
        return getattr(scenarios, self.builder)(engine.api, **params)


def make_cases(sz: Sizes, only: Sequence[str], scaling: bool) -> list[Case]:
    cases: list[Case] = []
    if "S1" in only:
        cases.append(Case("S1", "S1", "s1_chain", "us/step",
                          sz.s1_runs * CHAIN_STEPS, sz.s1_warm * CHAIN_STEPS,
                          {"runs": sz.s1_runs}, {"runs": sz.s1_warm}))
    if "S2" in only:
        for w in sz.s2_workers:
            cases.append(Case(f"S2/w={w}", "S2", "s2_fan_out", "us/event",
                              sz.s2_events, sz.s2_warm,
                              {"events": sz.s2_events, "workers": w},
                              {"events": sz.s2_warm, "workers": w}))
        for k in sz.scale_events if scaling else ():
            runs_on = None if k in sz.scale_llama else frozenset({BASELINE, "riverbed"})
            cases.append(Case(f"S2 K={k}", "S2", "s2_fan_out", "us/event", k, sz.s2_warm,
                              {"events": k, "workers": 4},
                              {"events": sz.s2_warm, "workers": 4}, runs_on))
    if "S3" in only:
        cases.append(Case("S3", "S3", "s3_state", "ops/s",
                          sz.s3_workers * sz.s3_increments, sz.s3_workers * sz.s3_warm_increments,
                          {"workers": sz.s3_workers, "increments": sz.s3_increments},
                          {"workers": sz.s3_workers, "increments": sz.s3_warm_increments}))
    if "S4" in only:
        cases.append(Case("S4", "S4", "s4_many_runs", "runs/s", sz.s4_runs, sz.s4_warm,
                          {"runs": sz.s4_runs}, {"runs": sz.s4_warm}))
    if "S5" in only:
        cases.append(Case("S5", "S5", "s5_stream", "us/event", sz.s5_events, sz.s5_warm,
                          {"events": sz.s5_events}, {"events": sz.s5_warm}))
    return cases


async def timed(job: Job, rep: int, timeout: float, loops: int = 1) -> Rep:
    """Run ``job`` ``loops`` times as one repetition; stop at the first wrong result.

    A wrong result, an exception or a timeout (for the whole repetition) is recorded as such.
    """

    async def repeat() -> str | None:
        for _ in range(loops):
            problem = await job()
            if problem is not None:
                return problem
        return None

    before = asyncio.all_tasks()
    cpu0, t0 = time.process_time(), time.perf_counter()
    status, detail = report.OK, ""
    try:
        problem = await asyncio.wait_for(repeat(), timeout)
        if problem is not None:
            status, detail = "INCORRECT", problem
    except asyncio.TimeoutError:
        status, detail = "HANG", f"no result after {timeout:g} s"
    except Exception as exc:
        status, detail = "ERROR", f"{type(exc).__name__}: {exc}"
    await _settle(before)
    return Rep(rep, status, time.perf_counter() - t0, time.process_time() - cpu0, detail, loops)


async def _settle(before: set[asyncio.Task[Any]]) -> None:
    """Let the tasks a job left behind (cancelled workers, cleanup) finish on its own clock.

    Otherwise that work would be charged to whichever engine runs next. Bounded, so an
    engine's long-lived background task cannot stall the harness.
    """
    me = asyncio.current_task()
    for _ in range(100):
        if not asyncio.all_tasks() - before - {me}:
            return
        await asyncio.sleep(0)


async def prepare(
    case: Case, engine: Engine, sz: Sizes, timeout: float
) -> tuple[Rep, Job | None, int]:
    """Build, warm up and calibrate one engine for a case: the warm-up, the job, its loops.

    An engine whose full-size job takes less than ``sz.min_rep_seconds`` runs it several times
    per repetition (``loops``), so the fixed cost of a repetition (the task ``wait_for``
    creates, the allocator after ``gc.collect()``) stays out of its per-unit figure. The
    estimate comes from the warm-up (scaled to full size); unless that says the job takes
    over ``PROBE_BELOW`` x the minimum, one full-size run measures it. That run also warms
    up what only a full-size run reaches.
    """
    try:
        warm_job, job = case.job(engine, warm=True), case.job(engine)
    except Exception as exc:  # the engine rejected the workflow definition
        return Rep(-1, "ERROR", 0.0, 0.0, f"building: {type(exc).__name__}: {exc}"), None, 1
    warm = await timed(warm_job, -1, timeout)
    if warm.status != report.OK:
        return warm, job, 1
    estimate = warm.wall * case.units / case.warm_units
    if estimate < PROBE_BELOW * sz.min_rep_seconds:
        probe = await timed(job, -1, timeout)
        if probe.status != report.OK:
            return probe, job, 1
        estimate = probe.wall
    return warm, job, max(1, min(sz.max_loops, math.ceil(sz.min_rep_seconds / estimate)))


async def run_case(case: Case, active: Sequence[Engine], sz: Sizes, timeout: float) -> CaseResult:
    result = CaseResult(case.key, case.scenario, case.unit, case.units,
                        {e.name: e.label for e in active})
    jobs: dict[str, Job] = {}
    for engine in active:
        result.reps[engine.name] = []
        result.warmups[engine.name], job, result.loops[engine.name] = await prepare(
            case, engine, sz, timeout)
        if job is not None:
            jobs[engine.name] = job
    runnable = [e for e in active if e.name in jobs]
    for rep in range(sz.reps):
        shift = rep % max(len(runnable), 1)
        for engine in runnable[shift:] + runnable[:shift]:
            last = rep == sz.reps - 1
            gc.collect()
            tracked = len(gc.get_objects()) if last else 0
            # Frozen objects are skipped by the collector, so a heap left by an earlier case or
            # engine does not slow this repetition's collections; its own garbage still counts.
            gc.freeze()
            try:
                loops = result.loops[engine.name]
                rep_result = await timed(jobs[engine.name], rep, timeout, loops)
            finally:
                gc.unfreeze()
            result.reps[engine.name].append(rep_result)
            if last:
                gc.collect()
                result.kept[engine.name] = (len(gc.get_objects()) - tracked) / loops
    return result


async def lost_update_selfcheck(sz: Sizes, timeout: float) -> dict[str, Any]:
    """S3 without the lock must lose updates, and the S3 check must say so."""
    job = baseline.s3_state(sz.s3_workers, sz.s3_increments, atomic=False)
    rep = await timed(job, -1, timeout)
    works = rep.status == "INCORRECT"
    verdict = "the check catches lost updates" if works else \
        "the check did NOT catch the unlocked variant: S3 results cannot be trusted"
    line = f"{'PASS' if works else 'FAIL'}  S3 lost-update self-check (no lock): " \
        f"{rep.status} {rep.detail} -> {verdict}"
    return {"status": rep.status, "detail": rep.detail, "works": works, "line": line}


# --- S4 memory, measured in fresh child processes -------------------------------------------

def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # 5 resets VmHWM to the current VmRSS


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


async def _memory_child(name: str, runs: int, warm: int, timeout: float) -> dict[str, Any]:
    engine = engines.load(name)
    case = Case("S4", "S4", "s4_many_runs", "runs/s", runs, warm, {"runs": runs}, {"runs": warm})
    warm_rep = await timed(case.job(engine, warm=True), -1, timeout)
    job = case.job(engine)
    gc.collect()
    before = _status_kib("VmRSS")
    _reset_peak_rss()
    rep = await timed(job, 0, timeout)
    peak = _status_kib("VmHWM")
    bad = next((r for r in (warm_rep, rep) if r.status != report.OK), None)
    if bad is not None:
        return {"status": bad.status, "detail": bad.detail}
    return {"status": report.OK, "kib_per_run": (peak - before) / runs}


async def measure_memory(active: Sequence[Engine], sz: Sizes, timeout: float) -> Memory:
    memory = Memory(sz.s4_runs)
    names = [e.name for e in active]
    for sample in range(sz.memory_samples):
        shift = sample % len(names)
        for name in names[shift:] + names[:shift]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--memory-child", name,
                "--runs", str(sz.s4_runs), "--warm", str(sz.s4_warm), "--timeout", str(timeout),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            try:
                answer = json.loads(out.decode().strip().splitlines()[-1])
            except (IndexError, ValueError):
                tail = err.decode().strip().splitlines()[-1:] or ["no output"]
                answer = {"status": "ERROR", "detail": f"child exited {proc.returncode}: {tail[0]}"}
            if answer["status"] == report.OK:
                memory.kib_per_run.setdefault(name, []).append(answer["kib_per_run"])
            else:
                memory.kib_per_run.setdefault(name, [])
                memory.failures.setdefault(name, []).append(
                    f"sample {sample}: {answer['status']}: {answer['detail']}")
    return memory


# --- command line ---------------------------------------------------------------------------

@dataclass
class Run:
    """Everything one invocation measured, for printing and for the JSON file."""

    started: str
    sizes: Sizes
    engines: list[Engine]
    skipped: dict[str, str]
    results: list[CaseResult] = field(default_factory=list)
    memory: Memory | None = None
    selfcheck: dict[str, Any] | None = None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and 2 reps: a smoke test")
    p.add_argument("--only", default=",".join(SCENARIOS), help="scenarios, e.g. S1,S2")
    p.add_argument("--engines", default=",".join(engines.ENGINE_NAMES),
                   help="engines to compare (asyncio is the baseline of every ratio)")
    p.add_argument("--json", type=Path, help="also write every repetition to this file")
    p.add_argument("--reps", type=int, help="timed repetitions (default 5, --quick 2)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before HANG")
    p.add_argument("--no-scaling", action="store_true", help="skip the S2 scaling cases")
    p.add_argument("--no-memory", action="store_true", help="skip S4 memory child processes")
    p.add_argument("--memory-child", metavar="ENGINE", help=argparse.SUPPRESS)
    p.add_argument("--runs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--warm", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.only = [s.strip().upper() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.engines = [s.strip() for s in args.engines.split(",") if s.strip()]
    return args


def load_engines(names: Sequence[str]) -> tuple[list[Engine], dict[str, str]]:
    loaded, skipped = [], {}
    for name in dict.fromkeys(names):
        try:
            loaded.append(engines.load(name))
        except EngineUnavailable as exc:
            skipped[name] = str(exc)
            print(f"skipping engine {name}: {exc}", file=sys.stderr)
    return loaded, skipped


def source_revision() -> str:
    """The checkout's commit, with ``+dirty`` when the work tree has changes (read-only git)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def emit(lines: Sequence[str] = ("",)) -> None:
    print("\n".join(lines), flush=True)


async def measure(args: argparse.Namespace, run: Run) -> None:
    sz = run.sizes
    for case in make_cases(sz, args.only, not args.no_scaling):
        active = [e for e in run.engines if case.only is None or e.name in case.only]
        if case.scenario == "S3" and run.selfcheck is None:
            run.selfcheck = await lost_update_selfcheck(sz, args.timeout)
            emit([run.selfcheck["line"], ""])
        result = await run_case(case, active, sz, args.timeout)
        run.results.append(result)
        emit([*report.case_table(result, BASELINE), ""])
        if case.scenario == "S4" and not args.no_memory:
            run.memory = await measure_memory(active, sz, args.timeout)
            emit([*report.memory_table(run.memory, result.labels, BASELINE), ""])
    scaled = [r for r in run.results if r.key.startswith("S2 K=")]
    if scaled:
        emit(["S2 scaling (4 workers): per-event cost should stay flat as K grows", "",
              *report.scaling_table(scaled), ""])


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.memory_child:
        answer = asyncio.run(_memory_child(args.memory_child, args.runs, args.warm, args.timeout))
        print(json.dumps(answer))
        return 0
    sizes = QUICK if args.quick else FULL
    if args.reps:
        sizes = replace(sizes, reps=args.reps)
    loaded, skipped = load_engines(args.engines)
    if not loaded:
        print("no engine could be loaded", file=sys.stderr)
        return 2
    run = Run(datetime.now().isoformat(timespec="seconds"), sizes, loaded, skipped)
    revision = source_revision()
    t0 = time.perf_counter()
    emit([f"riverbed benchmarks, {run.started}, commit {revision}, "
          f"Python {platform.python_version()}, "
          f"{'quick' if args.quick else 'full'} sizes, {sizes.reps} reps",
          "engines: " + ", ".join(e.label for e in loaded), ""])
    asyncio.run(measure(args, run))
    checks = report.check_targets(run.results, run.memory, BASELINE)
    emit(["Targets (riverbed):", *report.target_lines(checks)])
    if run.selfcheck is not None:
        emit([run.selfcheck["line"]])
    failed = sum(len(r.failures(name)) for r in run.results for name in r.reps)
    if run.memory is not None:
        failed += sum(len(problems) for problems in run.memory.failures.values())
    emit([f"total {time.perf_counter() - t0:.0f} s; failed repetitions: {failed}"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "started": run.started,
            "commit": revision,
            "python": platform.python_version(),
            "quick": args.quick,
            "sizes": vars(sizes),
            "engines": {e.name: e.label for e in loaded},
            "skipped": skipped,
            "cases": [r.to_json() for r in run.results],
            "memory": vars(run.memory) if run.memory else None,
            "selfcheck": run.selfcheck,
            "targets": checks,
        }, indent=1))
        emit([f"wrote {args.json}"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
