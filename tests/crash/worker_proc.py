"""A worker process of the crash tests: ``python -m tests.crash.worker_proc STORE_URL``.

It serves the crash workload's workflow until SIGTERM (or until the supervisor SIGKILLs it).
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
    run_worker([CrashFlow(workflow_name=WORKFLOW_NAME)], sys.argv[1], slots=16, poll_interval=0.1)
