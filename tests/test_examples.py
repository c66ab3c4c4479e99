"""Smoke test: every examples/plot_*.py runs headless with small arguments."""

import runpy
import sys
from pathlib import Path

import matplotlib
import pytest
from threadpoolctl import threadpool_limits

matplotlib.use("Agg")

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("plot_*.py"))
#: Small arguments per script; scripts not listed take ``--quick``.
SMALL_ARGS = {"plot_spacetime_demo.py": ["--sites", "15", "--days", "20"]}


def test_examples_found():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, tmp_path, monkeypatch, capsys):
    import matplotlib.pyplot as plt

    args = SMALL_ARGS.get(path.name, ["--quick"])
    monkeypatch.setattr(sys, "argv", [str(path), "--out", str(tmp_path), *args])
    try:
        # small factor matrices: one BLAS thread is as fast and does not slow
        # to a crawl when the test machine is oversubscribed
        with threadpool_limits(limits=1, user_api="blas"):
            runpy.run_path(str(path), run_name="__main__")
    finally:
        plt.close("all")
    pngs = list(tmp_path.glob("*.png"))
    assert pngs, f"{path.name} wrote no PNG"
    assert all(p.stat().st_size > 10_000 for p in pngs)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_short_and_public(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 150
    assert 'matplotlib.use("Agg")' in text
    assert "from kronecker_gp._" not in text and "import kronecker_gp._" not in text
