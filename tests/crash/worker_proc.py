"""A worker process of the crash tests: ``python -m tests.crash.worker_proc STORE_URL [SLOTS]``.

It serves the crash workload's workflow until SIGTERM (or until the supervisor SIGKILLs it),
running at most ``SLOTS`` runs at once (16 by default).
"""

from __future__ import annotations

import logging
import sys

if __name__ == "__main__":
    # Import the workload under its package name, as the test process does: event types
    # are stored under their module's name.
    from tests.crash.workload import WORKFLOW_NAME, CrashFlow

    from riverbed.worker import run_worker

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    slots = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    run_worker(
        [CrashFlow(workflow_name=WORKFLOW_NAME)], sys.argv[1], slots=slots, poll_interval=0.1
    )
