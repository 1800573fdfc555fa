"""Print every dependency of pyproject.toml pinned at its floor ("numpy>=1.24" -> "numpy==1.24"), one per line.
Extras named on the command line come too (their floors), e.g. `python3 .ci/floors.py ray`."""
import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
deps = list(project["dependencies"])
for extra in sys.argv[1:]:
    deps += project["optional-dependencies"][extra]
for d in deps:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][^,;\s]*)\s*", d)
    if not m:
        sys.exit(f"{d!r} has no plain >= floor: give it one, so .ci/floors can install it")
    if m.group(1) != "torch":  # torch: the local CPU wheel, installed first (a floor from PyPI pulls CUDA)
        print(f"{m.group(1)}=={m.group(2)}")
