"""ticketkit against the libraries it builds on (issue 20): model cards, matplotlib state, dependency floors."""
from __future__ import annotations

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


def _measured_cfg(source: dict, test_size: int = 400):
    cfg = _level_cfg(command="ticketkit find imdb cnn")
    cfg["find"]["data"]["max_test"] = test_size
    cfg["data"] = {"dataset": "imdb", "test_size": test_size, "source": {**source, "rows": {"train": 25000, "test": 25000}}}
    return cfg


def _evals(text: str):
    """The card as huggingface_hub reads it: its own parser, its own model-index reader."""
    import tempfile
    from pathlib import Path

    from huggingface_hub import metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "README.md").write_text(text)
        meta = metadata_load(Path(d) / "README.md")
    name, evals = model_index_to_eval_results(meta["model-index"])
    return meta, evals


def test_model_card_says_what_was_measured(tmp_path):
    """Issue 20, defect 5: a 400-review subsample of local parquet is not 'stanfordnlp/imdb, split test'."""
    from ticketkit.card import run_card, ticket_card

    local = _measured_cfg({"kind": "local", "path": "/data/imdb", "format": "parquet"})
    for text in (ticket_card(local), run_card({}, [local, local])):
        meta, evals = _evals(text)
        assert "datasets" not in meta  # no Hub dataset was read, so none is claimed
        for e in evals:
            assert e.dataset_type != "stanfordnlp/imdb" and "local parquet: /data/imdb" in e.dataset_name
            assert e.dataset_split == "test" and e.dataset_revision is None
            assert e.dataset_args["test_reviews"] == 400 and e.dataset_args["test_reviews_in_split"] == 25000
            assert "stratified" in e.dataset_args["subsample"]
        assert "400 of its 25000 test reviews" in text
    sha = "0123456789abcdef0123456789abcdef01234567"
    hub = _measured_cfg({"kind": "hub", "id": "stanfordnlp/imdb", "revision": sha}, test_size=25000)
    meta, (e,) = _evals(ticket_card(hub))
    assert meta["datasets"] == ["stanfordnlp/imdb"]
    assert (e.dataset_type, e.dataset_revision, e.dataset_split) == ("stanfordnlp/imdb", sha, "test")
    assert e.dataset_args == {"test_reviews": 25000, "test_reviews_in_split": 25000}  # the whole split: no subsample


def test_config_records_where_the_data_came_from(tiny_data):
    """prepare_data's info (config.json's "data") names the files it read and the full splits' sizes."""
    from ticketkit.config import FindConfig
    from ticketkit.data import data_identity, prepare_data

    cfg = FindConfig()
    cfg.data.vocab_size, cfg.data.max_len, cfg.data.max_test = 100, 32, 50
    info = prepare_data(cfg.data, 0, data_dir=tiny_data).info
    assert info["source"] == {"kind": "local", "path": str(tiny_data / "imdb"), "format": "parquet",
                              "rows": {"train": 400, "test": 200}}
    assert info["test_size"] == 50 and "source" not in data_identity(info)  # resumes compare the reviews, not paths
