"""Plays a Jupyter server that starts a step and is then killed with SIGKILL.

Usage: python reap_helper.py WORKSPACE_ROOT. Prints one JSON line
``{"sandbox_id", "state", "pids": {"sid": ...}}`` once the step runs, then waits to die.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from jupyter_agentbuild.sandbox.local_provider import LocalSandboxProvider


async def main(root: Path) -> None:
    provider = LocalSandboxProvider(workspace_root=str(root))
    sandbox = await provider.create("reaped", workspace=None, files={}, env={})
    ready = asyncio.Event()
    seen: list[str] = []

    async def sink(stream: str, lines: list[str], continued: bool) -> None:
        seen.extend(lines)
        if "READY" in lines:
            ready.set()

    cmd = "sleep 1000 & setsid sleep 1000 & echo sid $!; echo READY; sleep 1000"
    task = asyncio.create_task(sandbox.run_step(cmd, step=0, timeout=None, on_output=sink))
    await ready.wait()
    sid = next(int(line.split()[1]) for line in seen if line.startswith("sid "))
    report = {"sandbox_id": sandbox.id, "state": sandbox.state(), "pids": {"sid": sid}}
    print(json.dumps(report), flush=True)
    await task  # never returns: the test kills this process


if __name__ == "__main__":
    # a script the test runs as a subprocess (then kills): its own loop, not a test
    asyncio.run(main(Path(sys.argv[1])))
