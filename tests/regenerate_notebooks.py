"""Execute lessons top to bottom in fresh kernels and save them with clean outputs.

    make notebooks                      # every lesson
    .venv/bin/python tests/regenerate_notebooks.py notebooks/02_session_crud.ipynb

Runs in the same isolated environment as the tests (pinned Redis binary, no .env), so the
saved outputs are what nbval expects. Keeps outputs, execution counts and the widget state
(so GitHub and a freshly opened JupyterLab show the panels, not "model not found"); drops the
noisy metadata (timings, ids that change every run).
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import conftest  # noqa: E402  (the test suite's environment isolation)

KEEP_CELL_METADATA = ("tags",)
KEEP_NOTEBOOK_METADATA = ("kernelspec", "language_info", "widgets")


def clean(notebook: nbformat.NotebookNode) -> None:
    notebook.metadata = {k: v for k, v in notebook.metadata.items() if k in KEEP_NOTEBOOK_METADATA}
    notebook.metadata.get("language_info", {}).pop("version", None)
    for cell in notebook.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA}
        cell.pop("id", None)
        for output in cell.get("outputs", []):
            if "metadata" in output:
                output.metadata = {}
    notebook.nbformat_minor = 4


def execute(path: Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        store_widget_state=True,  # into metadata.widgets, kept by clean()
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    clean(notebook)
    nbformat.write(notebook, path)
    return time.perf_counter() - started


def main(paths: list[str]) -> None:
    conftest.pytest_configure(None)
    targets = [Path(p) for p in paths] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in targets:
        print(f"{path.name}: executed in {execute(path):.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
