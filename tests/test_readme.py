"""The README's notebook snippet runs (on shrunken sizes), so the documented calls never rot."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippet_runs():
    text = README.read_text()
    section = text[text.index("## Use from a notebook"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    small = code.replace("limit=9984", "limit=256").replace("num_draws=1024", "num_draws=8").replace('"mnist_10k/9984"', '"mnist_10k/256"')
    assert small != code
    ns = {}
    exec(compile(small, "README.md", "exec"), ns)
    mc, th = ns["mc"], ns["th"]
    assert mc.delta.shape == th.second_order.shape == (3,)
    assert ns["eig"].converged
