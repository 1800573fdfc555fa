"""The store keeps each distinct tensor file once (issue 20: a quick job wrote 674 MB, init and rewind stored at
every level). Levels stay ordinary, self-contained ticket directories: they verify, load and copy on their own."""
from __future__ import annotations

import shutil

import pytest
import torch

from ticketkit import Ticket, find_ticket, verify


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    from conftest import tiny_find_config

    return find_ticket(tiny_find_config(), data_dir=tiny_data, store=tmp_path_factory.mktemp("store"), progress=False)


def _inode(p):
    return p.stat().st_ino


def test_init_and_rewind_are_stored_once(run):
    levels = sorted(run.path.glob("level-*"))
    assert len(levels) == 3
    # rewinding to init: every level's init and rewind are the same bytes, so one file on disk
    assert len({_inode(d / f) for d in levels for f in ("init.safetensors", "rewind.safetensors")}) == 1
    assert len({_inode(d / "ticket.safetensors") for d in levels}) == 3  # the masks differ
    files = [p for d in levels for p in d.iterdir()]
    stored = sum({_inode(p): p.stat().st_size for p in files}.values())
    assert stored < 0.6 * sum(p.stat().st_size for p in files)
    assert verify(str(run.path)) == {"checked": 3, "problems": []}
    t = Ticket.from_pretrained(str(levels[-1]))
    assert torch.equal(t.init["embedding.weight"], Ticket.load(levels[0]).init["embedding.weight"])


def test_levels_stay_self_contained(run, tmp_path):
    level = run.path / "level-02"
    exported = Ticket.load(level).save(tmp_path / "exported")
    copied = shutil.copytree(level, tmp_path / "copied")
    for d in (exported, copied):  # real bytes, linked to nothing
        assert all(p.stat().st_nlink == 1 for p in d.iterdir())
        assert verify(str(d)) == {"checked": 1, "problems": []}
    # rewriting one level of the run (atomically, by rename) leaves the others' shared bytes alone
    before = (run.path / "level-00" / "init.safetensors").read_bytes()
    t = Ticket.load(run.path / "level-01")
    t.init = {n: v + 1 for n, v in t.init.items()}
    t.save(run.path / "level-01", overwrite=True)
    assert (run.path / "level-00" / "init.safetensors").read_bytes() == before
    assert (run.path / "level-01" / "init.safetensors").read_bytes() != before
    assert verify(str(run.path)) == {"checked": 3, "problems": []}
