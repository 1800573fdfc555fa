"""One case per bad input of issue #5. Each runs the real CLI and asserts: non-zero exit, stderr is ONE line starting
with `error:` that names the problem, and nothing new (let alone half-written) appeared in the store."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_FLAGS, run_cli
from reliability_util import find_argv, listing, reference_run, report

RESULTS: dict[str, bool] = {}


def _data(tmp: Path, tiny_data: Path, edit=None) -> Path:
    d = tmp / "data"
    shutil.copytree(tiny_data, d)
    if edit:
        edit(d / "imdb")
    return d


def _recipe(tmp: Path, text: str) -> list[str]:
    (tmp / "r.toml").write_text(text)
    return ["--recipe", str(tmp / "r.toml")]


def _ticket(tmp: Path, ref: Path, edit) -> list[str]:
    """A copy of a real ticket with its tensors edited and its manifest re-sealed: only the deep checks can tell."""
    from ticketkit.ticket import read_tensors, write_manifest, write_tensors

    d = tmp / "artifacts" / "my-ticket"
    shutil.copytree(ref / "level-01", d)
    t = read_tensors(d)
    edit(t, d)
    write_tensors(d, t)
    write_manifest(d)
    return ["show", str(d)]


def _wrong_tokenizer(t, d):
    from ticketkit.data import build_tokenizer

    tok = build_tokenizer([f"w{i} x{i} y{i}" for i in range(200)], 100, 32)  # same size, other words
    (d / "tokenizer.json").write_text(tok.to_str())


def _csv_latin1(d: Path):
    df = pd.read_parquet(d / "train.parquet")
    df.loc[3, "text"] = "caf\u00e9 cr\u00e8me " + df.loc[3, "text"]
    (d / "train.parquet").unlink()
    df.to_csv(d / "train.csv", index=False, encoding="latin-1")


def _edit_parquet(fn):
    def edit(d: Path):
        df = pd.read_parquet(d / "train.parquet")
        fn(df).to_parquet(d / "train.parquet")
    return edit


def _set(df, col, row, value):
    df[col] = df[col].astype(object)
    df.loc[row, col] = value
    return df


# name -> (setup(tmp, tiny_data, ref) -> argv after `ticketkit`, words the message must contain)
CASES = {
    "unknown dataset": (lambda tmp, data, ref: ["find", "mnist", "cnn", "--data-dir", data], ["unknown dataset 'mnist'", "imdb", "mnist/train.parquet"]),
    "unknown architecture": (lambda tmp, data, ref: ["find", "imdb", "resnet", "--data-dir", data], ["'resnet' is not one of", "cnn"]),
    "recipe syntax error": (lambda tmp, data, ref: ["find", "--data-dir", data, *_recipe(tmp, "[train\nepochs = 3\n")], ["not valid TOML", "line 1"]),
    "recipe unknown key": (lambda tmp, data, ref: ["find", "--data-dir", data, *_recipe(tmp, "[train]\nepochz = 3\n")], ["unknown key 'train.epochz'", "epochs"]),
    "recipe wrong type": (lambda tmp, data, ref: ["find", "--data-dir", data, *_recipe(tmp, '[train]\nepochs = "three"\n')], ["train.epochs", "expected int"]),
    "recipe rate out of range": (lambda tmp, data, ref: ["find", "--data-dir", data, *_recipe(tmp, "[prune]\nrate = 1.5\n")], ["prune.rate", "(0, 1)"]),
    "recipe negative epochs": (lambda tmp, data, ref: ["find", "--data-dir", data, *_recipe(tmp, "[train]\nepochs = -2\n")], ["train.epochs", "at least 1"]),
    "level index beyond the run": (lambda tmp, data, ref: ["show", ref.name, "--level", "7"], ["level 7 is not in this run", "00, 01, 02"]),
    "level density beyond the run": (lambda tmp, data, ref: ["show", ref.name, "--level", "5%"], ["reached", "% weights remaining"]),
    "data missing split": (lambda tmp, data, ref: ["find", "imdb", "cnn", "--data-dir", _data(tmp, data, lambda d: (d / "test.parquet").unlink())],
                           ["no test split", "test.parquet"]),
    "data wrong columns": (lambda tmp, data, ref: ["find", "imdb", "cnn", "--data-dir", _data(tmp, data, _edit_parquet(lambda df: df.rename(columns={"text": "review"})))],
                           ["expected columns 'text' and 'label'", "review"]),
    "data labels outside 0/1": (lambda tmp, data, ref: ["find", "imdb", "cnn", "--data-dir", _data(tmp, data, _edit_parquet(lambda df: _set(df, "label", 5, 2)))],
                                ["labels must be 0 or 1", "row 5"]),
    "data empty text": (lambda tmp, data, ref: ["find", "imdb", "cnn", "--data-dir", _data(tmp, data, _edit_parquet(lambda df: _set(df, "text", 7, "   ")))],
                        ["empty text", "row 7"]),
    "data non-UTF-8 CSV": (lambda tmp, data, ref: ["find", "imdb", "cnn", "--data-dir", _data(tmp, data, _csv_latin1)], ["train.csv", "not UTF-8"]),
    "ticket wrong tokenizer": (lambda tmp, data, ref: _ticket(tmp, ref, _wrong_tokenizer), ["wrong tokenizer"]),
    "ticket missing tensors": (lambda tmp, data, ref: _ticket(tmp, ref, lambda t, d: t.pop("rewind.fc.bias")), ["missing tensor rewind.fc.bias"]),
    "ticket mask/weight shape mismatch": (lambda tmp, data, ref: _ticket(tmp, ref, lambda t, d: t.update({"mask.fc.weight": t["mask.fc.weight"][:, :-1].contiguous()})),
                                          ["mask.fc.weight has shape"]),
    "ticket non-bool mask": (lambda tmp, data, ref: _ticket(tmp, ref, lambda t, d: t.update({"mask.fc.weight": t["mask.fc.weight"].float()})),
                             ["mask.fc.weight has dtype float32, expected bool"]),
    "ticket NaN weights": (lambda tmp, data, ref: _ticket(tmp, ref, lambda t, d: t["init.embedding.weight"].view(-1).__setitem__(3, float("nan"))),
                           ["init.embedding.weight contains NaN"]),
}


@pytest.fixture
def ref(tiny_data, tmp_path_factory):
    return reference_run(tmp_path_factory, tiny_data)


def _one_line_error(p, words, code=None):
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode != 0, p.stdout
    assert code is None or p.returncode == code, (p.returncode, p.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, tiny_data, ref):
    setup, words = CASES[case]
    store = tmp_path / "artifacts"
    shutil.copytree(ref, store / ref.name)  # a store with a finished run in it, for --level and to detect writes
    argv = [str(a) for a in setup(tmp_path, tiny_data, ref)]
    if argv[0] == "find":  # flags override a recipe, so a recipe case leaves its own key to the recipe
        flags = TINY_FLAGS if "--recipe" not in argv else [f for i, f in enumerate(TINY_FLAGS)
                                                           if "--epochs" not in TINY_FLAGS[max(i - 1, 0):i + 1]]
        argv += ["--store", str(store), *flags, "--rounds", "1", "--quiet"]
    else:
        argv += ["--store", str(store)]
    before = listing(store)
    p = run_cli(*argv, check=False, cwd=tmp_path)
    _one_line_error(p, words)
    assert listing(store) == before, sorted(listing(store) ^ before)
    RESULTS[case] = True


def test_nan_loss_stops_the_level_and_reports_it(tmp_path, tiny_data):
    """A poisoned weight (NaN in the trained weights the next fine-tuning level starts from): the level stops with
    TrainingDiverged (exit 4), run.json says 'diverged', and no ticket is written for that level."""

    argv = find_argv(tiny_data, levels=1, extra=["--rewind", "final", "--quiet"])
    assert subprocess.run(argv, cwd=tmp_path, capture_output=True).returncode == 0
    run = next(tmp_path.glob("artifacts/find-*"))
    from safetensors.torch import save_file

    from ticketkit.ticket import Ticket
    # level 0's trained weights, which level 1 fine-tunes from, poisoned in the layout of runs written before
    # trained.safetensors (kept under trained/): a loaded level's own file is checked for NaNs and retrained
    t = Ticket.load(run / "level-00")
    state = dict(t.trained)
    state["fc.weight"][0, 0] = float("nan")
    (run / "trained").mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(run / "trained" / "level-00.safetensors"))
    (run / "level-00" / "trained.safetensors").unlink()
    man = json.loads((run / "level-00" / "manifest.json").read_text())
    man["files"].pop("trained.safetensors")
    (run / "level-00" / "manifest.json").write_text(json.dumps(man))
    shutil.rmtree(run / "level-01")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(dict(info, status="running", levels=[])))
    before = listing(tmp_path / "artifacts")
    p = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
    _one_line_error(p, ["level 1", "loss became nan", "lower --lr"], code=5)
    assert json.loads((run / "run.json").read_text())["status"] == "diverged"
    assert listing(tmp_path / "artifacts") == before  # no level-01 ticket, no trained/level-01
    assert "diverged" in run_cli("ls", "--store", tmp_path / "artifacts").stdout
    RESULTS["NaN loss during training"] = True


def _mount(args: list[str]) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_disk_full_is_one_line_and_leaves_nothing_half_written(tmp_path, tiny_data):
    """A real full disk: the store on a 160 KiB tmpfs (needs root; skipped otherwise). The run stops with one line;
    every file present is whole (no temp files, every ticket verifies), so freeing space and re-running resumes."""
    store = tmp_path / "small"
    store.mkdir()
    if os.geteuid() != 0 or not _mount(["-t", "tmpfs", "-o", "size=160k", "tmpfs", str(store)]):
        pytest.skip("mounting a tiny tmpfs needs root")
    try:
        p = subprocess.run(find_argv(tiny_data, store=str(store), extra=["--quiet"]), cwd=tmp_path, capture_output=True, text=True)
        line = _one_line_error(p, ["disk full while writing", "free space"], code=3)
        left = [str(x) for x in store.rglob(".*") if x.name.endswith((".tmp", ".old"))]
        assert not left, left
        from ticketkit.verify import verify_path
        problems, checked = verify_path(str(store))
        assert not [x for x in problems if "not complete" not in x], problems
        report("disk_full", {"message": line, "tickets_intact": checked, "temp_files_left": 0})
    finally:
        subprocess.run(["umount", str(store)], check=True)
    RESULTS["disk full"] = True


def test_permission_denied_on_the_store(tmp_path, tiny_data):
    """A store that cannot be written: a read-only bind mount as root (root ignores chmod), chmod 0o500 otherwise."""
    store = tmp_path / "ro"
    store.mkdir()
    how = "chmod 0o500"
    if os.geteuid() == 0:
        if not (_mount(["--bind", str(store), str(store)]) and _mount(["-o", "remount,bind,ro", str(store)])):
            pytest.skip("cannot make a read-only bind mount")
        how = "read-only bind mount"
    else:
        store.chmod(0o500)
    try:
        p = subprocess.run(find_argv(tiny_data, store=str(store), extra=["--quiet"]), cwd=tmp_path, capture_output=True, text=True)
        _one_line_error(p, ["writable", str(store)])
        assert listing(store) == set()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(store)], check=True)
        store.chmod(0o700)
    RESULTS[f"permission denied ({how})"] = True


def test_zz_bad_input_report():
    if not RESULTS:
        pytest.skip("no bad-input case ran in this session")
    report("bad_input", {"cases": len(RESULTS), "refused_with_one_line": sum(RESULTS.values()), "names": sorted(RESULTS)})
