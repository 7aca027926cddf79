"""examples/quickstart.ipynb runs top to bottom in a kernel started through the server."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from .kernel import KernelSession

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "examples" / "quickstart.ipynb"


async def test_quickstart_runs(kernel: KernelSession) -> None:
    notebook = nbformat.read(EXAMPLE, as_version=4)  # type: ignore[no-untyped-call]
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        run = await kernel.execute(cell.source, within=120)
        assert run.status == "ok", (cell.source, run.error, run.stderr)
        if cell.source.startswith("%%agentbuild"):
            assert run.seconds < 10.0  # returns at once (a bound a loaded machine keeps)

    def outcomes() -> list[str]:
        return [v for v in kernel.status_values() if "succeeded" in v or "failed" in v]

    await kernel.wait_for(lambda: len(outcomes()) == 2, within=120)
    statuses = kernel.status_values()
    assert "succeeded" in statuses[0] and "failed" in statuses[1]
    assert "done" in kernel.log_html() and "something is wrong" in kernel.log_html()
