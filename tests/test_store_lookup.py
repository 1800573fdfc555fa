"""One lookup of a run by path, name or unique prefix (Store.find_run) behind every command that takes a run."""
import pytest

from ticketkit.errors import TicketkitError
from ticketkit.report.compare import resolve_run
from ticketkit.store import Store


def _store(tmp_path):
    st = Store(tmp_path / "store")
    for name, f in [("find-imdb-cnn-aaa", "run.json"), ("find-imdb-cnn-aaab", "run.json"),
                    ("transfer-imdb-yelp2-cnn-bbb", "results.json"), ("notes-ccc", None), (".tmp-find-x", "run.json")]:
        (st.root / name).mkdir(parents=True)
        if f:
            (st.root / name / f).write_text("{}")
    return st


def test_a_path_an_exact_name_or_a_unique_prefix(tmp_path):
    st = _store(tmp_path)
    assert st.find_run("find-imdb-cnn-aaa").name == "find-imdb-cnn-aaa"  # exact beats the longer name it prefixes
    assert st.find_run("transfer").name == "transfer-imdb-yelp2-cnn-bbb"
    assert st.find_run(str(tmp_path)) == tmp_path  # an existing path is taken as given
    with pytest.raises(TicketkitError, match="matches 2 entries.*give more of the name"):
        st.find_run("find-imdb-cnn-a")
    with pytest.raises(TicketkitError, match="no run called 'nothing'.*ticketkit ls"):
        st.find_run("nothing")
    with pytest.raises(TicketkitError, match="no run called '.tmp'"):  # half-written entries are never picked
        st.find_run(".tmp")


def test_compare_takes_only_runs(tmp_path):
    st = _store(tmp_path)
    with pytest.raises(TicketkitError, match="no find or transfer run called 'notes'"):
        resolve_run("notes", st.root)  # in the store, but neither a find nor a transfer run
    with pytest.raises(TicketkitError, match="is not a find or transfer run"):
        resolve_run(str(st.root / "notes-ccc"), st.root)
    assert resolve_run("transfer-imdb", st.root).name == "transfer-imdb-yelp2-cnn-bbb"
