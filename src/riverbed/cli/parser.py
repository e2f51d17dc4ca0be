"""The ``riverbed`` command line: every command, option and help text (argparse).

The help texts are the CLI reference; keep them complete.
"""

from __future__ import annotations

import argparse

from riverbed.cli.common import STORE_ENV

__all__ = ["build_parser"]

_SPEC_HELP = (
    "the workflow: MODULE:NAME or path/to/file.py:NAME, where NAME is a Workflow "
    "instance, a Workflow subclass (created with no arguments) or a function with no "
    "arguments that returns a workflow"
)
_STORE_HELP = (
    "the run store URL, e.g. sqlite:///runs.db (relative path) or sqlite:////abs/runs.db; "
    f"default: ${STORE_ENV}"
)

_MAIN_EPILOG = """\
exit codes:
  0    the command (or the run) succeeded
  1    the run failed: a step raised and was not retried or caught
  2    bad input: a workflow spec, an --arg, a store URL or a run id; nothing was run
  3    the run timed out (Workflow(timeout=...))
  4    the run was cancelled (e.g. `riverbed runs cancel`), or asked for input after
       standard input was closed
  130  interrupted with Ctrl-C (a durable run is left resumable)

Errors are one line on standard error; add --debug to see the traceback.
"""

_RUN_ID_HELP = "the run's id, as `riverbed runs list` shows it"

_RUN_EPILOG = f"""\
Progress (steps started and done, streamed events, elapsed time) goes to standard error;
the result goes to standard output: a string as it is, anything else as JSON.

When the run streams an InputRequiredEvent, its `prefix` (or its fields) is shown as a
question; the line you type is sent back as HumanResponseEvent(response=LINE) (or the one
HumanResponseEvent subclass the workflow's steps take). Answers can be piped on standard
input, one line per question.

Ctrl-C: an in-memory run is cancelled (exit 130). A durable run (--store, ${STORE_ENV}, or
a workflow created with store=...) is left as it is in its store, and the command to
continue it is printed: riverbed runs resume RUN_ID MODULE:NAME --store URL.

Exit codes: 0 completed, 1 failed, 2 bad input, 3 timed out, 4 cancelled (or a question
after standard input closed), 130 Ctrl-C.

examples:
  riverbed run examples/research_assistant.py:ResearchAssistant --arg question="why rivers"
  riverbed run myapp.flows:build --json '{{"items": [1, 2]}}' --store sqlite:///runs.db
"""

_RUNS_EPILOG = f"""\
Every runs command reads the durable store given by --store or ${STORE_ENV}.

examples:
  riverbed runs list --store sqlite:///runs.db --status running
  riverbed runs show RUN_ID --json
  riverbed runs resume RUN_ID examples/durable_long_run.py:workflow
  riverbed runs cancel RUN_ID
  riverbed runs prune --older-than 7d
"""

_DRAW_EPILOG = """\
Nodes are steps (boxes) and event types (rounded); an edge goes from an event to each
step that takes it and from a step to each event it may return. The graph comes from the
same step signatures the engine validates and routes by. HTML and SVG are drawn here and
work offline (no CDN, no graphviz). The format defaults to -o's suffix (.html, .svg,
.mmd/.md), else mermaid. With --run, the steps, events and edges the run went through
are highlighted (a step run more than once shows its count).

examples:
  riverbed draw examples/research_assistant.py:ResearchAssistant
  riverbed draw myapp.flows:MyFlow -o flow.html
  riverbed draw myapp.flows:MyFlow --run RUN_ID --store sqlite:///runs.db -o run.svg
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=100)


def _common(debug_default: object) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--debug",
        action="store_true",
        default=debug_default,
        help="show the full traceback of an error",
    )
    return parent


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=epilog,
        formatter_class=_Formatter,
        parents=[_common(argparse.SUPPRESS)],
    )


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = _add(sub, "run", "run a workflow with live progress and print its result", _RUN_EPILOG)
    run.add_argument("workflow", metavar="MODULE:NAME", help=_SPEC_HELP)
    run.add_argument(
        "--arg",
        "-a",
        dest="args",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field of the StartEvent (repeatable); parsed as JSON when the field is not "
        "a string (--arg angles=3, --arg tags='[\"a\"]'), text otherwise",
    )
    run.add_argument(
        "--json",
        dest="json_args",
        metavar="OBJECT",
        help="StartEvent fields as a JSON object; --arg overrides the same key",
    )
    run.add_argument("--store", metavar="URL", help=_STORE_HELP + ", else the workflow's own store")
    run.add_argument(
        "--run-id", metavar="ID", help="the new run's id (default: a random one); must be unused"
    )
    run.add_argument(
        "--quiet", "-q", action="store_true", help="no progress, only questions and the result"
    )
    run.add_argument(
        "--submit",
        action="store_true",
        help="only record the run in the (durable, shared) store, print its id and exit: "
        "`riverbed worker` processes execute it",
    )


def _add_runs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runs = _add(sub, "runs", "list, inspect, resume, cancel and prune recorded runs", _RUNS_EPILOG)
    inner = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)

    listing = _add(inner, "list", "a table of runs, newest first")
    listing.add_argument("--store", metavar="URL", help=_STORE_HELP)
    listing.add_argument(
        "--status",
        choices=["running", "waiting", "completed", "failed", "cancelled", "timed_out"],
        help="only runs with this status; waiting: running runs that wait for an event from "
        "outside (a human's answer)",
    )
    listing.add_argument(
        "--workflow", metavar="NAME", help="only runs of this workflow (module.ClassName)"
    )
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--offset", type=int, default=0, help="skip this many (default 0)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    show = _add(
        inner, "show", "one run: status, timeline (events, attempts, errors), state, result"
    )
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--store", metavar="URL", help=_STORE_HELP)
    show.add_argument(
        "--json", action="store_true", help="print everything as one JSON object (for machines)"
    )

    resume = _add(
        inner,
        "resume",
        "continue a durable run whose process stopped, with live progress",
        "Give the workflow the run belongs to (as MODULE:NAME or --workflow), loaded the\n"
        "same way as when the run started, so its step and event classes are found again.\n"
        "Committed steps are not run again; steps that were running run again. Questions\n"
        "the run asked and nobody answered are asked at the terminal. Exit codes as for\n"
        "`riverbed run`.\n\n"
        "example:\n"
        "  riverbed runs resume RUN_ID examples/durable_long_run.py:workflow "
        "--store sqlite:///runs.db",
    )
    resume.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    resume.add_argument("workflow", metavar="MODULE:NAME", nargs="?", help=_SPEC_HELP)
    resume.add_argument(
        "--workflow",
        "-w",
        dest="workflow_option",
        metavar="MODULE:NAME",
        help="same as MODULE:NAME",
    )
    resume.add_argument(
        "--store", metavar="URL", help=_STORE_HELP + ", else the workflow's own store"
    )
    resume.add_argument("--quiet", "-q", action="store_true", help="no progress")

    cancel = _add(
        inner,
        "cancel",
        "cancel a run by id",
        "The run is marked cancelled in the store; a process running it stops at its next\n"
        "heartbeat (a third of the store's lease, 10 s by default) and exits with code 4.\n"
        "A run that already ended is refused (exit 2).",
    )
    cancel.add_argument("run_id", metavar="RUN_ID", help=_RUN_ID_HELP)
    cancel.add_argument("--store", metavar="URL", help=_STORE_HELP)

    prune = _add(
        inner,
        "prune",
        "delete finished runs older than an age; running runs are kept",
        "A run's age is counted from when it finished. Prints how many runs were deleted.",
    )
    prune.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        help="a number and a unit: s, m, h, d or w (7d, 12h, 90m)",
    )
    prune.add_argument("--store", metavar="URL", help=_STORE_HELP)


def _add_draw(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    draw = _add(sub, "draw", "draw a workflow's steps and events (and a run's path)", _DRAW_EPILOG)
    draw.add_argument("workflow", metavar="MODULE:NAME", help=_SPEC_HELP)
    draw.add_argument(
        "--format",
        "-f",
        choices=["mermaid", "html", "svg"],
        help="mermaid (text), html (one offline page) or svg (a standalone image)",
    )
    draw.add_argument("--run", metavar="RUN_ID", help="highlight the path this recorded run took")
    draw.add_argument("--store", metavar="URL", help=_STORE_HELP + " (with --run)")
    draw.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    draw.add_argument("--title", help="the HTML page's title (default: the workflow's name)")


def _add_extras(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = _add(
        sub,
        "serve",
        "serve workflows over HTTP (API, event stream, web page); needs riverbed[server]",
    )
    serve.add_argument("workflows", metavar="MODULE:NAME", nargs="+", help=_SPEC_HELP)
    serve.add_argument("--store", metavar="URL", help=_STORE_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    # The range (and whether the port is free) is checked by run_server, for every caller.
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--token",
        help="bearer token clients must send (default: $RIVERBED_TOKEN); needed when "
        "binding beyond loopback",
    )
    serve.add_argument(
        "--no-execute",
        action="store_true",
        help="only record runs and answers in the store; `riverbed worker` processes "
        "sharing it execute them",
    )

    worker = _add(sub, "worker", "execute durable runs from a shared store (scale-out worker)")
    worker.add_argument("workflows", metavar="MODULE:NAME", nargs="+", help=_SPEC_HELP)
    worker.add_argument("--store", metavar="URL", help=_STORE_HELP + " (required)")
    worker.add_argument("--slots", type=int, default=8, help="runs executed at once (default 8)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``riverbed`` and all its commands."""
    parser = argparse.ArgumentParser(
        prog="riverbed",
        description="Run, inspect, draw and serve riverbed workflows.",
        epilog=_MAIN_EPILOG,
        formatter_class=_Formatter,
        parents=[_common(False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_run(sub)
    _add_runs(sub)
    _add_draw(sub)
    _add_extras(sub)
    return parser
