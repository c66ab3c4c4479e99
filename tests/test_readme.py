"""The README's Python snippets run as written (they are the first code users copy)."""

import re
from pathlib import Path

import matplotlib
import pytest
from threadpoolctl import threadpool_limits

matplotlib.use("Agg")

README = Path(__file__).parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_python_snippets():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index):
    import matplotlib.pyplot as plt

    namespace: dict = {}
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    finally:
        plt.close("all")
    if "gp" in namespace:
        assert hasattr(namespace["gp"], "kernel_")  # each snippet fits a model
