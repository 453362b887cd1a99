"""No import circle between the project's modules, and the finder that says so finds one when there is one."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from support.import_cycles import circles, import_graph

ROOT = Path(__file__).resolve().parents[1]


def project_packages() -> list[str]:
    """The packages import-linter checks (pyproject's root_packages): one list for both checks."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["root_packages"]


def test_no_module_of_the_project_is_part_of_an_import_circle():
    graph = import_graph(project_packages())
    assert "aggc_rl.inprocess.engine" in graph and "aggc_rl.stats" in graph  # the graph is the real one
    found = circles(graph)
    assert not found, (
        "import circles (each line: modules that import one another round a loop):\n"
        + "\n".join(" <-> ".join(c) for c in found)
    )


def _package(tmp_path: Path, files: dict[str, str]) -> str:
    root = tmp_path / "circle_probe"
    root.mkdir()
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).write_text(text)
    return root.name


def test_a_circle_is_found_even_through_a_lazy_import(tmp_path, monkeypatch):
    # The shape lab v2 brought in: engine imports loop at the top, loop imports engine inside a function.
    name = _package(
        tmp_path,
        {
            "engine.py": "from circle_probe.loop import local\n",
            "loop.py": "def local(t):\n    return t\n\n\ndef build():\n    from circle_probe.engine import X\n",
            "arms.py": "import circle_probe.size\n",
            "size.py": "",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert circles(import_graph([name])) == [["circle_probe.engine", "circle_probe.loop"]]
    sys.modules.pop(name, None)


def test_a_package_importing_a_module_that_imports_the_package_is_a_circle(tmp_path, monkeypatch):
    # eval.backends had this shape: the package loads its engines, the engines import a class from the package.
    name = _package(
        tmp_path,
        {
            "__init__.py": "class Completion: ...\n\n\ndef load():\n    from circle_probe import hf\n",
            "hf.py": "from circle_probe import Completion\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert circles(import_graph([name])) == [["circle_probe", "circle_probe.hf"]]


def test_a_layered_package_has_no_circle_and_a_long_loop_is_one_circle():
    chain = {"a": {"b"}, "b": {"c"}, "c": set(), "d": {"d"}}
    assert circles(chain) == [["d"]]  # a module importing itself counts
    loop = {f"m{i}": {f"m{(i + 1) % 500}"} for i in range(500)}  # deep: no recursion limit
    assert circles(loop) == [sorted(loop)]
