"""The pycaffe notebook runs headless, top to bottom, on a tiny budget."""
from __future__ import annotations

import base64

import nbformat
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOK = REPO / "python" / "notebooks" / "approx_dropout_fashion_mnist.ipynb"


def test_notebook_executes_and_plots(monkeypatch):
    monkeypatch.setenv("APPROX_DROPOUT_NOTEBOOK_ITERATIONS", "12")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), \
        "commit the notebook without outputs"
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs)
    assert "12 iterations per net" in text
    assert "bounded  rate 0.5000" in text and "paper" in text
    assert "stock Dropout" in text and "RDP" in text and "speedup" in text
    pngs = [out["data"]["image/png"] for cell in nb.cells if cell.cell_type == "code"
            for out in cell.outputs if "image/png" in out.get("data", {})]
    assert len(pngs) == 1 and base64.b64decode(pngs[0]).startswith(b"\x89PNG")
