"""ticketkit against the libraries it builds on (issue 20): model cards, matplotlib state, dependency floors."""
from __future__ import annotations

import pytest

from ticketkit.config import FindConfig

TRICKY = 'ticketkit find imdb cnn --data-dir "data{#x}" --store "{{ store }}" --tag "{% if %}"'


def _level_cfg(level=2, command=TRICKY):
    return {"find": FindConfig().to_dict(), "level": level, "density": {"prunable": 0.64, "all": 0.7},
            "metrics": {"test_accuracy": 0.8, "test_macro_f1": 0.79}, "command": command,
            "versions": {"ticketkit": "0", "torch": "2"}, "run": "find-x"}


def test_model_card_is_not_a_template():
    """What the user typed is quoted verbatim: `{#` used to crash the Jinja render, `{{ }}` vanished."""
    from huggingface_hub import ModelCard

    from ticketkit.card import run_card, ticket_card

    for text in (ticket_card(_level_cfg()), run_card({"command": TRICKY}, [_level_cfg(0), _level_cfg(1)])):
        assert TRICKY in text
        card = ModelCard(text)  # the metadata still parses, model-index included
        assert card.data.library_name == "ticketkit" and card.data.eval_results


def test_reports_leave_the_callers_matplotlib_backend_alone(tmp_path):
    """The library draws with matplotlib.figure.Figure: a caller's backend (here svg) and figures stay as they were."""
    import re
    from pathlib import Path

    import matplotlib

    from test_report import make_results
    from ticketkit.report import render_report

    pkg = Path(__file__).resolve().parents[1] / "ticketkit"
    pattern = r"\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot"  # global state, the caller's
    offenders = [str(p) for p in pkg.rglob("*.py") if re.search(pattern, p.read_text())]
    assert not offenders, offenders
    before = matplotlib.get_backend()
    try:
        matplotlib.use("svg")
        import matplotlib.pyplot as plt

        figs = plt.get_fignums()
        paths = render_report(make_results(), tmp_path)
        assert any(str(p).endswith(".png") for p in paths.values())
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == figs
    finally:
        matplotlib.use(before)


def test_dependency_floors_are_true():
    """The floors pyproject.toml declares hold for what the code imports, and CI installs exactly them (.ci/floors)."""
    import re
    import subprocess
    import sys
    import tomllib

    from conftest import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors = dict(re.fullmatch(r"([\w\-\[\]]+)==(.+)", line).groups() for line in subprocess.run(
        [sys.executable, str(REPO / ".ci" / "floors.py"), "ray"], check=True, capture_output=True, text=True).stdout.split())
    vers = {k: tuple(int(x) for x in v.split(".")) for k, v in floors.items()}
    assert project["requires-python"] == ">=3.11"  # config.py imports tomllib
    assert vers["huggingface_hub"] >= (1, 0)  # hubspec imports errors.RemoteEntryNotFoundError and errors.HTTPError
    assert vers["datasets"] >= (4, 2) and vers["tokenizers"] >= (0, 22, 1)  # the first that allow huggingface_hub 1.x
    assert "ray" in floors and vers["ray"] >= (2, 10)  # core Ray, not ray[default]; 2.9 imports pkg_resources
    assert len(floors) == len(project["dependencies"]) - 1 + 1  # every dependency but torch (the local wheel), + ray
    assert "bash .ci/floors" in (REPO / ".ci" / "run").read_text()
