"""Re-execute the committed notebooks (nbclient) and check they stay executed."""

import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
#: Seconds one notebook may take to re-execute (CI budget).
BUDGET = 90
PRIVATE = re.compile(r"^\s*(from|import)\s+kronecker_gp(\.\w+)*\._", re.MULTILINE)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_notebooks_found():
    names = [p.name for p in NOTEBOOKS]
    assert "01_quickstart.ipynb" in names
    assert "02_structured_linear_algebra.ipynb" in names
    assert "03_multitask.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_executed_and_public(path):
    nb = nbformat.read(path, as_version=4)
    cells = _code(nb)
    assert all(c.execution_count is not None for c in cells), "commit it executed"
    assert any(
        "image/png" in out.get("data", {}) for c in cells for out in c.outputs
    ), "no plot in the committed outputs"
    assert not any(out.output_type == "error" for c in cells for out in c.outputs)
    for cell in cells:
        assert not PRIVATE.search(cell.source), "notebooks use the public API only"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=BUDGET,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    # one BLAS thread: the factors are small, and threads oversubscribe CI
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError on any failing cell
    assert time.perf_counter() - t0 < BUDGET
    images = [
        o for c in _code(nb) for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert images
