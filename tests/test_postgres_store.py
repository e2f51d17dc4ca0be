"""PostgresStore's own concerns that need no server: how the optional driver is imported.

What every durable store promises is tested once for SQLite and PostgreSQL in
``tests/test_durable_store_contract.py``; PostgreSQL's schemas, migrations, connections,
advisory and row locks, URLs and passwords are in ``tests/test_postgres_failures.py``.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_core_never_imports_asyncpg_and_a_missing_driver_says_what_to_install() -> None:
    core = (
        "import sys, riverbed, riverbed.stores.urls as u;"
        " u.store_from_url('memory://'); u.store_from_url('sqlite:///x.db');"
        " assert 'asyncpg' not in sys.modules, 'the core imported asyncpg'"
    )
    assert subprocess.run([sys.executable, "-c", core], capture_output=True).returncode == 0
    missing = (
        "import sys; sys.modules['asyncpg'] = None;"
        " from riverbed.stores.urls import store_from_url;"
        " store_from_url('postgresql://u:pw@h/db')"
    )
    done = subprocess.run([sys.executable, "-c", missing], capture_output=True, text=True)
    assert done.returncode == 1
    assert "pip install 'riverbed[postgres]'" in done.stderr
