"""Answering a run that another live process holds: the answer goes through the store."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from riverbed import HumanResponseEvent

ROOT = Path(__file__).resolve().parents[1]
HITL_MODULE = "tests.crash.hitl"


def _load(name: str) -> ModuleType:
    # The child runs ``python -m tests.crash.hitl``: load the same file under the same name,
    # so both processes store and read events under the same type keys.
    spec = importlib.util.spec_from_file_location(name, ROOT / (name.replace(".", "/") + ".py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


hitl = sys.modules.get(HITL_MODULE) or _load(HITL_MODULE)


async def test_an_answer_from_another_process_reaches_the_live_owner(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        HITL_MODULE,
        "start-pair-live",
        str(db),
        "held",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert owner.stdout is not None
        line = await asyncio.wait_for(owner.stdout.readline(), 30)
        assert line.decode().strip() == "WAITING"

        answering = hitl.PairFlow(store=hitl.url(str(db)))
        answer = HumanResponseEvent(response="yes")
        # The run's owner is alive: the answer is committed and handed to it.
        assert await answering.send_event("held", answer, client_event_id="a1") is None
        # The same answer again is applied once.
        assert await answering.send_event("held", answer, client_event_id="a1") is None

        out, err = await asyncio.wait_for(owner.communicate(), 30)
        assert owner.returncode == 0, err.decode()
        assert out.decode().strip() == "rivers: yes"
        state_json, _ = await answering.store.read_state("held")
        assert '"answers": ["yes"]' in state_json
        await answering.store.close()
    finally:
        if owner.returncode is None:
            owner.kill()
            await owner.wait()
