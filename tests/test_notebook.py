"""notebooks/quickstart.ipynb runs top to bottom (nbclient, this environment's kernel) and its result cells hold
pictures: the whole chain on the tiny model, then tav.client against a tav-serve the notebook starts and stops."""

import json
import shutil
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
CELL_TIMEOUT_S = 600


def test_the_committed_notebook_carries_no_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_the_quickstart_runs_top_to_bottom_with_pictures_in_its_results(tmp_path):
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
    import nbformat

    notebook = nbformat.read(shutil.copy(NOTEBOOK, tmp_path), as_version=4)
    nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {}) or "image/gif" in o.get("data", {})]
    videos = [o for o in outputs if "<video" in o.get("data", {}).get("text/html", "")]
    assert len(images) >= 7, f"only {len(images)} pictures"  # clip, reference, pipeline, two packs, served, preview
    assert len(videos) == 2
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "largest difference from the reference" in text and "tav-serve stopped with exit status 143" in text
    assert not any((tmp_path / "quickstart-output" / "store" / "uploads").iterdir())  # the job's upload went
