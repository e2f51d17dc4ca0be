"""``python -m riverbed.server MODULE:WORKFLOW [MORE...] [--store URL] [--host H]
[--port P] [--token T]``: serve workflows (the same as ``riverbed serve``)."""

from __future__ import annotations

import argparse
import os
import sys

from riverbed.errors import WorkflowError
from riverbed.server.serve import run_server


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, load the workflows and serve them."""
    from riverbed.cli.loading import load_workflow

    parser = argparse.ArgumentParser(prog="python -m riverbed.server", description=__doc__)
    parser.add_argument("workflows", nargs="+", metavar="MODULE:WORKFLOW")
    parser.add_argument("--store", default=None, help="e.g. sqlite:///runs.db")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--token", default=os.environ.get("RIVERBED_TOKEN"), help="or RIVERBED_TOKEN"
    )
    parser.add_argument(
        "--no-execute",
        action="store_true",
        help="only record runs and answers; `riverbed worker` processes execute them",
    )
    args = parser.parse_args(argv)
    try:
        workflows = [load_workflow(spec) for spec in args.workflows]
        run_server(
            workflows, args.store, args.host, args.port, args.token, execute=not args.no_execute
        )
    except (WorkflowError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
