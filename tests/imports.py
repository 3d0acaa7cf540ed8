"""Run ``esm ARGS`` in a fresh interpreter and report which top-level packages it imported."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Python source that makes this interpreter a light node: its import system refuses torch (a meta
# path finder first on sys.meta_path), so nothing can reach torch even indirectly. Run it first in
# a script, or put it in a ``sitecustomize.py`` first on PYTHONPATH for a whole process tree.
NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "functorch"):
            raise ModuleNotFoundError(f"No module named {name!r} (light node)", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
"""



def light_node(folder: Path, monkeypatch) -> None:
    """Make every process started afterwards (``monkeypatch``: until the test ends) a light node:
    a ``sitecustomize.py`` with NO_TORCH in ``folder``, first on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(NO_TORCH)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]))


def maps_torch(pid: int) -> bool:
    """Whether the process has torch's shared libraries mapped (torch was imported)."""
    return any("libtorch" in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())


HEAVY = ("torch", "torchvision", "elasticsearch", "fastapi", "matplotlib", "pytorch_metric_learning")

_SCRIPT = """
import json, sys
from es_metric.cli import main
try:
    main(sys.argv[1:], prog_name="esm")
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
sys.stderr.write("\\nIMPORTED " + json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
"""


@dataclass
class Run:
    code: int
    modules: set[str]
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict:
        return json.loads(self.stdout.strip().splitlines()[-1])

    def heavy(self) -> set[str]:
        return {m for m in HEAVY if m in self.modules}


def run_esm(*args: str, timeout: float = 120) -> Run:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    head, _, tail = proc.stderr.rpartition("\nIMPORTED ")
    assert tail, f"esm {' '.join(map(str, args))} died before reporting:\n{proc.stderr}"
    found = json.loads(tail)
    return Run(found["code"], set(found["modules"]), proc.stdout, head)
