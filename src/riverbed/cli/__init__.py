"""The ``riverbed`` command: ``run``, ``runs``, ``draw``, ``serve`` and ``worker``.

``main(argv)`` returns the exit code (see ``riverbed --help``). This package is the
composition root: the only place that turns a store URL into a store. The ``cli`` extra
(``rich``) is needed by ``run`` and ``runs``; ``draw`` needs nothing beyond the core.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from riverbed.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    UsageError,
    durable_store,
    one_line,
    require_rich,
    run_async,
    store_url,
    use_store,
)
from riverbed.cli.loading import LoadError, load_workflow
from riverbed.cli.parser import build_parser
from riverbed.errors import WorkflowError

__all__ = ["main"]


def _console(stderr: bool = True) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Tables written to a pipe or a file keep their rows on one line each.
    tty = stream.isatty()
    return Console(stderr=stderr, width=None if tty else 160, soft_wrap=not tty)


def _run(args: argparse.Namespace) -> int:
    require_rich("run")
    from riverbed.cli.running import Session, run_workflow
    from riverbed.cli.start_args import build_start_event

    workflow = load_workflow(args.workflow)
    use_store(workflow, store_url(args.store))
    start = build_start_event(workflow.start_event_class, args.args, args.json_args)
    if args.submit:
        from riverbed.cli.running import submit_workflow

        return run_async(submit_workflow(workflow, start, args.run_id), workflow.store)
    session = Session(args.workflow, _console(), quiet=args.quiet, store_url=store_url(args.store))
    return run_async(run_workflow(workflow, start, args.run_id, session), workflow.store)


def _runs(args: argparse.Namespace) -> int:
    require_rich("runs")
    from riverbed.cli import runs
    from riverbed.cli.running import Session, resume_workflow

    command = args.runs_command
    # A run's progress goes to stderr (its result to stdout); tables are the output.
    console = _console(stderr=command in ("resume", "cancel", "prune"))
    if command == "resume":
        spec = args.workflow_option or args.workflow
        if spec is None:
            raise UsageError(
                "runs resume needs the workflow the run belongs to: "
                "riverbed runs resume RUN_ID MODULE:NAME (or --workflow MODULE:NAME)."
            )
        workflow = load_workflow(spec)
        use_store(workflow, store_url(args.store))
        session = Session(spec, console, quiet=args.quiet, store_url=store_url(args.store))
        return run_async(resume_workflow(workflow, args.run_id, session), workflow.store)
    store = durable_store(store_url(args.store))
    if command == "list":
        return run_async(
            runs.list_runs(
                store,
                console,
                status=args.status,
                workflow=args.workflow,
                limit=args.limit,
                offset=args.offset,
                as_json=args.json,
            ),
            store,
        )
    if command == "show":
        return run_async(runs.show_run(store, args.run_id, console, as_json=args.json), store)
    if command == "cancel":
        return run_async(runs.cancel_run(store, args.run_id, console), store)
    return run_async(runs.prune_runs(store, args.older_than, console), store)


def _draw(args: argparse.Namespace) -> int:
    from riverbed.cli.draw import draw, format_for, write_output

    workflow = load_workflow(args.workflow)
    fmt = format_for(args.format, args.output)
    store = None
    if args.run is not None:
        store = durable_store(store_url(args.store))
    elif args.store is not None:
        raise UsageError("--store is for --run RUN_ID: it names where the run is recorded.")
    text = run_async(draw(workflow, fmt, store=store, run_id=args.run, title=args.title), store)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_output(args.output, text)
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    from riverbed.cli import extras

    command = args.command
    if command == "run":
        return _run(args)
    if command == "runs":
        return _runs(args)
    if command == "draw":
        return _draw(args)
    if command == "serve":
        return extras.serve(
            args.workflows,
            store_url(args.store),
            args.host,
            args.port,
            args.token,
            execute=not args.no_execute,
        )
    return extras.work(args.workflows, store_url(args.store), args.slots)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``riverbed`` command with ``argv`` (default: ``sys.argv[1:]``); returns
    the exit code. Bad input prints one line and returns 2."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # `runs resume RUN_ID --store URL MODULE:NAME`: argparse gives the optional
        # MODULE:NAME up when an option comes between it and RUN_ID; take it back.
        if (
            getattr(args, "runs_command", None) == "resume"
            and args.workflow is None
            and len(unknown) == 1
            and not unknown[0].startswith("-")
        ):
            args.workflow = unknown[0]
        else:
            parser.parse_args(argv)  # reports the unrecognized arguments, as before
    try:
        return _dispatch(args)
    except (UsageError, LoadError) as exc:
        return _fail(args, exc, one_line(exc))
    except WorkflowError as exc:
        # Anything else riverbed refuses before a run starts (a store it cannot open, a
        # workflow it cannot accept) is bad input too.
        return _fail(args, exc, f"{type(exc).__name__}: {one_line(exc)}")
    except KeyboardInterrupt:
        print("riverbed: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug (ours or the workflow's) outside a run
        if getattr(args, "debug", False):
            traceback.print_exception(type(exc), exc, exc.__traceback__)
        hint = "" if getattr(args, "debug", False) else " (add --debug for the traceback)"
        print(f"riverbed: error: {type(exc).__name__}: {one_line(exc)}{hint}", file=sys.stderr)
        return EXIT_FAILED


def _fail(args: argparse.Namespace, exc: BaseException, message: str) -> int:
    if getattr(args, "debug", False):
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    print(f"riverbed: error: {message}", file=sys.stderr)
    return EXIT_USAGE
