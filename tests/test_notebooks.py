"""The notebooks as sources: every `notebooks/NN_*.ipynb` (what Jupyter opens and nbmake
runs) has a `py:percent` twin (what a diff or a review reads), and the two say the same
thing; notebooks are committed without outputs; they reach the package through its
modules and the `vocolab.lab` facade, never through a command-line job.

After editing either file, `jupytext --sync notebooks/NN_name.ipynb` updates the other.
"""

import re
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
IPYNB = sorted(NOTEBOOKS.glob("*.ipynb"))
MAX_VOCOLAB_IMPORTS = 9  # a handful, not a dozen


def _cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_there_are_notebooks_and_every_source_has_its_notebook():
    assert len(IPYNB) >= 9
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.py")) == [p.stem for p in IPYNB]


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_the_notebook_and_its_percent_source_agree(path):
    notebook, source = jupytext.read(path), jupytext.read(path.with_suffix(".py"))
    assert _cells(notebook) == _cells(source), f"run `jupytext --sync {path.relative_to(NOTEBOOKS.parent)}`"
    assert notebook.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_the_notebook_is_committed_without_outputs(path):
    for cell in jupytext.read(path).cells:
        if cell.cell_type == "code":
            assert cell.get("outputs", []) == [] and cell.get("execution_count") is None


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_the_notebook_imports_a_handful_and_no_job_module(path):
    code = "\n".join(cell.source for cell in jupytext.read(path).cells if cell.cell_type == "code")
    imports = re.findall(r"^\s*(?:from|import) (vocolab[\w.]*)", code, re.M)
    assert not [m for m in imports if m.startswith(("vocolab.studies", "vocolab.cli"))], imports
    assert len(imports) <= MAX_VOCOLAB_IMPORTS, imports
    assert "vocolab.lab" in code or "from vocolab import lab" in code


@pytest.mark.parametrize("path", IPYNB, ids=lambda p: p.stem)
def test_the_notebook_says_how_long_it_takes(path):
    """Its first cell passes measured minutes for quick mode and for a CPU to `lab.setup`."""
    call = re.search(r"lab\.setup\((.*?)\)\n", path.with_suffix(".py").read_text(), re.S)
    assert call and "minutes=" in call.group(1) and '"quick"' in call.group(1) and '"cpu"' in call.group(1)


def test_setup_says_how_long_in_this_mode(capsys, monkeypatch):
    from vocolab import lab

    monkeypatch.setenv("VOCOLAB_QUICK", "1")
    lab.setup("nano", minutes={"quick": 0.4, "cpu": 18})
    assert "takes under a minute in quick mode" in capsys.readouterr().out
    monkeypatch.setenv("VOCOLAB_QUICK", "0")
    lab.setup("nano", minutes={"quick": 0.4, "cpu": 18})
    assert "takes about 18 min in real mode on a CPU (nano)" in capsys.readouterr().out
    lab.setup("nano", minutes={"quick": 0.4})
    assert "has not been measured yet" in capsys.readouterr().out
