"""The sweep's live view off a terminal (issue 20, defect 6): one line per finished cell, not a line a second."""
from pathlib import Path

import ticketkit.sweep.live as live


def test_off_a_terminal_one_line_per_finished_cell(monkeypatch, capsys):
    states = [{"id": f"c{i}", "kind": "find", "status": "pending", "axes": {}, "seconds": None} for i in range(8)]
    monkeypatch.setattr(live, "cell_states", lambda sd: [dict(c) for c in states])
    view = live.LiveView(Path("sweep-x"), enabled=True)  # capsys' stderr is not a terminal
    view.start()
    capsys.readouterr()
    for _ in range(20):  # the drivers refresh about once a second while cells run
        view.refresh(running="c0")
    assert capsys.readouterr().err == ""
    for i in range(3):
        states[i].update(status="done", seconds=41.0)
    states[3].update(status="failed", error="boom")
    view.refresh()
    view.refresh()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4, lines
    assert lines[2].startswith("cell 3/8 done c2 (41s), ETA") and "cell 4/8 FAILED: boom" in lines[3]
    view.close()
    assert capsys.readouterr().err == ""


def test_eta_reads_as_a_duration():
    assert [live.eta(s) for s in (4.2, 125, 3 * 3600 + 5 * 60)] == ["4s", "2m", "3h05m"]
