"""The lessons in a real JupyterLab in headless Chromium: Run All, no errors, widgets render.

Run All is done on the **student edition** (``student/``, stubs left as ``...``): that is what a
learner runs, and apart from the exercises its cells are the masters' cells, which nbval and
the student-edition-then-master run (tests/test_coursework.py) already execute. The lessons
whose experiments take long (``NOT_RUN_IN_BROWSER``) are instead opened as committed, trusted
as ``make lab`` trusts them, and their saved panels must render. A master is run in the
browser only for lesson 02's session explorer, clicked through: create, read, update, delete,
each checked in Redis by code run in the notebook's own kernel.

What made these tests flaky, and the cure used here (see the field notes): Run All sent
before the kernel connection is usable (wait for a connected, idle kernel, then confirm the
run started, else send it again); toasts covering elements (settings turn news off); cells
outside the viewport not in the DOM (windowing off); sleeps (none: wait on conditions).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from .lab import NOTEBOOKS, ROOT, Lab, lessons

pytestmark = pytest.mark.browser

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PANEL_REPR = re.compile(r"<\w+>")  # Panel.__repr__: what a sessionlab panel shows as text
RUN_TIMEOUT = 240.0
EXPLORER_LESSON = "02_session_crud.ipynb"
MASTERS = NOTEBOOKS
STUDENT = ROOT / "student"
#: Where a student edition is served: next to the masters, so it runs from the same folder.
STUDENT_PREFIX = "student-"
#: Lessons whose student edition is not Run All in the browser: there they take 20-90 s each on
#: a busy 2-core CI machine (crashes, eviction waves, failovers, a shop under load). Their student
#: editions still run top to bottom, every check saying ❌, then their masters in the same kernel
#: (test_student_edition_then_master_run_in_one_kernel), their panels are tested kernel-side
#: (tests/panels, test_eviction, test_cluster), and they render in this JupyterLab from the
#: committed widget state (test_a_committed_lesson_opens_with_its_panels).
NOT_RUN_IN_BROWSER = ("03", "04", "05", "06", "07")

# -- JavaScript run in the page (JupyterLab exposes itself as window.jupyterapp) ---------------

KERNEL_READY = """(path) => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.context || panel.context.path !== path) return false;
  if (!panel.sessionContext) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle'
    && panel.context.isReady;
}"""

RUN = "(command) => { window.jupyterapp.commands.execute(command); return true; }"

SELECT_CELL = """(index) => {
  window.jupyterapp.shell.currentWidget.content.activeCellIndex = index; return true;
}"""

CELLS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel.sessionContext.session.kernel;
  return {
    kernel: kernel.status,
    cells: panel.content.widgets.map((cell) => ({
      type: cell.model.type,
      source: cell.model.sharedModel.getSource(),
      count: cell.model.type === 'code' ? cell.model.executionCount : null,
      busy: cell.model.type === 'code'
        && (cell.node.querySelector('.jp-InputPrompt') || {}).textContent?.includes('*'),
      tags: cell.model.getMetadata('tags') || [],
      outputs: cell.model.type === 'code' ? cell.model.outputs.toJSON() : [],
    })),
  };
}"""

WIDGET_VIEWS = """() => {
  // jupyterlab_widgets renders a widget output as an output node holding the widget's view;
  // until the model arrives it shows "Loading widget...", and an error text if it never does.
  const outputs = [...document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output')];
  const panels = document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .sl-panel:not(.sl-panel .sl-panel)');
  return {
    rendered: outputs.filter((node) => node.querySelector(':scope > .jupyter-widgets')).length,
    broken: outputs.map((node) => node.textContent)
      .filter((text) => /Loading widget|Error displaying widget|model not found/.test(text)),
    panels: panels.length,
  };
}"""

EXECUTE = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false});
  let text = '';
  future.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === 'stream') text += msg.content.text;
    if (t === 'error') text += 'ERROR ' + msg.content.ename + ': ' + msg.content.evalue;
  };
  await future.done;
  return text;
}"""

# Read a session from every redis-server the notebook's kernel runs: proof the write landed.
READ_IN_KERNEL = """
def _sl_read(key):
    import json
    from sessionlab.server import running_servers
    found = []
    for server in running_servers():
        client = server.client()
        try:
            fields = client.hgetall(key) if client.type(key) == "hash" else {}
            if fields:
                profile = {k[2:]: json.loads(v) for k, v in fields.items() if k.startswith("p:")}
                found.append({"data": profile, "ttl": client.ttl(key), "port": server.port})
        finally:
            client.close()
    print(json.dumps(found))
_sl_read(%r)
del _sl_read
"""

OPEN_WIDGETS = """
def _sl_open(ids):
    import json
    from ipywidgets.widgets.widget import _instances  # the models the kernel holds open
    print(json.dumps([model_id for model_id in ids if model_id in _instances]))
_sl_open(%r)
del _sl_open
"""


# -- steps ---------------------------------------------------------------------------------------


def open_notebook(page: Any, lab: Lab, name: str) -> None:
    """Open a lesson in a fresh workspace and wait until its kernel is connected and idle."""
    page.goto(f"{lab.url}/lab/tree/{name}?reset&token={lab.token}")
    page.wait_for_function(KERNEL_READY, arg=name, timeout=120_000)


def run(page: Any, command: str) -> None:
    """Send a notebook command; confirm a cell started (``[*]`` or a count), else resend once.

    The resend covers the one known race: a command sent while the kernel connection is
    still settling is silently dropped.
    """
    started = """() => {
      const cells = window.jupyterapp.shell.currentWidget.content.widgets
        .filter((c) => c.model.type === 'code');
      return cells.some((c) => c.model.executionCount !== null
        || (c.node.querySelector('.jp-InputPrompt') || {}).textContent?.includes('*'));
    }"""
    for _attempt in range(2):
        page.evaluate(RUN, command)
        try:
            page.wait_for_function(started, timeout=20_000)
            return
        except _timeout_error():  # resend below
            continue
    pytest.fail(f"{command} never started a cell")


def clear_outputs(page: Any) -> None:
    """Forget the committed outputs and counts, so what the test sees comes from this run."""
    page.evaluate(RUN, "notebook:clear-all-cell-outputs")
    page.wait_for_function(
        """() => window.jupyterapp.shell.currentWidget.content.widgets
          .every((c) => c.model.type !== 'code' || c.model.executionCount === null)"""
    )


def wait_until_run(
    page: Any, lesson: nbformat.NotebookNode, last: int | None = None
) -> dict[str, Any]:
    """Wait until every non-empty code cell (up to index ``last``) has run and the kernel idles."""
    done = """(last) => {
      const panel = window.jupyterapp.shell.currentWidget;
      const kernel = panel.sessionContext.session.kernel;
      const cells = panel.content.widgets.filter((c, i) => last === null || i <= last);
      return kernel.status === 'idle' && cells.every((c) => c.model.type !== 'code'
        || !c.model.sharedModel.getSource().trim()
        || (c.model.executionCount !== null
            && !(c.node.querySelector('.jp-InputPrompt') || {}).textContent?.includes('*')));
    }"""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        try:
            page.wait_for_function(done, arg=last, timeout=5_000)
            break
        except _timeout_error():
            state = page.evaluate(CELLS)
            errors = unexpected_errors(state["cells"], lesson)
            if errors:  # Run All stops at an error: report it now, not after the timeout
                pytest.fail("a cell failed:\n" + "\n".join(errors))
            if time.monotonic() > deadline:
                pending = [
                    i
                    for i, c in enumerate(state["cells"])
                    if c["type"] == "code" and c["count"] is None
                ]
                pytest.fail(f"cells {pending} did not run within {RUN_TIMEOUT:.0f} s")
    return page.evaluate(CELLS)


def unexpected_errors(
    cells: list[dict[str, Any]], committed: nbformat.NotebookNode | None
) -> list[str]:
    """Error outputs outside ``raises-exception`` cells, and stderr the lesson does not show."""
    found = []
    for index, cell in enumerate(cells):
        for output in cell["outputs"]:
            if output["output_type"] == "error" and "raises-exception" not in cell["tags"]:
                found.append(f"cell {index}: {output['ename']}: {output['evalue']}")
            elif output.get("name") == "stderr" and not _committed_stderr(committed, index):
                found.append(f"cell {index} wrote to stderr: {output['text'][:500]}")
    return found


def _committed_stderr(committed: nbformat.NotebookNode | None, index: int) -> bool:
    """Whether the committed lesson shows stderr in that cell (a student edition: the master's
    cell with the same source, since the editions differ in cells and have no outputs)."""
    if committed is None or index >= len(committed.cells):
        return False
    source = committed.cells[index].source
    cells = [committed.cells[index]]
    if committed.metadata.get("otter"):  # the student edition: look the cell up in its master
        master = nbformat.read(MASTERS / committed_name(committed), as_version=4)
        cells = [cell for cell in master.cells if cell.source == source]
    return any(o.get("name") == "stderr" for cell in cells for o in cell.get("outputs", []))


def committed_name(notebook: nbformat.NotebookNode) -> str:
    return notebook.metadata["otter"]["assignment_name"] + ".ipynb"


def expected_widgets(page: Any, cells: list[dict[str, Any]]) -> tuple[int, int]:
    """How many widget views must show, and how many of them are sessionlab panels.

    A widget the lesson closed later (``panel.close()`` stops its threads) has no view any
    more, so only the widgets still open in the kernel count.
    """
    widgets = [o for c in cells for o in c["outputs"] if WIDGET_MIME in o.get("data", {})]
    ids = [o["data"][WIDGET_MIME]["model_id"] for o in widgets]
    shown = run_in_kernel(page, OPEN_WIDGETS % ids)
    assert not shown.startswith("ERROR"), shown
    still_open = set(json.loads(shown))
    widgets = [o for o in widgets if o["data"][WIDGET_MIME]["model_id"] in still_open]
    panels = [o for o in widgets if PANEL_REPR.fullmatch(o["data"].get("text/plain", ""))]
    return len(widgets), len(panels)


def wait_for_widgets(page: Any, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Wait until every open widget output is a rendered view; fail on a broken one."""
    return wait_for_views(page, *expected_widgets(page, cells))


def wait_for_views(page: Any, outputs: int, panels: int) -> dict[str, Any]:
    """Wait until ``outputs`` widget views (``panels`` of them sessionlab panels) render."""
    ready = f"""() => {{
      const views = ({WIDGET_VIEWS})();
      return views.broken.some((t) => /Error displaying widget|model not found/.test(t))
        || (views.rendered === {outputs} && views.broken.length === 0
            && views.panels === {panels});
    }}"""
    with contextlib.suppress(_timeout_error()):  # the asserts below say what is missing
        page.wait_for_function(ready, timeout=60_000)
    views = page.evaluate(WIDGET_VIEWS)
    assert views["broken"] == [], views
    expected = {"rendered": outputs, "panels": panels}
    assert {name: views[name] for name in expected} == expected
    return views


def _timeout_error() -> type[Exception]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # only when a browser runs

    return PlaywrightTimeout


def run_in_kernel(page: Any, code: str) -> str:
    return page.evaluate(EXECUTE, code)


def committed(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


# -- every lesson ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lesson",
    [path for path in lessons() if path.name[:2] not in NOT_RUN_IN_BROWSER],
    ids=lambda path: path.stem,
)
def test_student_edition_runs_and_renders(
    page: Any, lab: Lab, artifacts: Path, lesson: Path
) -> None:
    """Run All on the student edition: every stub is ``...``, no cell may fail, panels render."""
    student = STUDENT / lesson.name
    assert student.exists(), f"student/{lesson.name} is missing: run make student"
    served = f"{STUDENT_PREFIX}{lesson.name}"
    shutil.copy(student, lab.root / served)
    open_notebook(page, lab, served)
    run(page, "notebook:run-all-cells")
    notebook = nbformat.read(student, as_version=4)
    state = wait_until_run(page, notebook)

    errors = unexpected_errors(state["cells"], notebook)
    assert not errors, "\n".join(errors)
    views = wait_for_widgets(page, state["cells"])
    first_panel = page.locator(".sl-panel").first
    if views["panels"]:
        first_panel.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / f"student-{lesson.stem}.png"))


@pytest.mark.parametrize(
    "lesson",
    [path for path in lessons() if path.name[:2] in NOT_RUN_IN_BROWSER],
    ids=lambda path: path.stem,
)
def test_a_committed_lesson_opens_with_its_panels(
    page: Any, lab: Lab, artifacts: Path, lesson: Path
) -> None:
    """The lesson as committed, trusted the way ``make lab`` trusts it, opened in a fresh
    JupyterLab with nothing run: every widget renders from the saved widget state, none
    shows "model not found" or its text stand-in (what an untrusted notebook shows). For the
    lessons not Run All here; the others' panels render live in the test above."""
    served = f"opened-{lesson.name}"
    shutil.copy(lesson, lab.root / served)
    trust = subprocess.run(
        [sys.executable, "-m", "jupyter", "trust", str(lab.root / served)],
        capture_output=True,
        text=True,
    )
    assert trust.returncode == 0, trust.stderr
    outputs = [
        output
        for cell in committed(lesson.name).cells
        for output in cell.get("outputs", [])
        if WIDGET_MIME in output.get("data", {})
    ]
    panels = [o for o in outputs if PANEL_REPR.fullmatch(o["data"].get("text/plain", ""))]
    open_notebook(page, lab, served)
    try:
        views = wait_for_views(page, len(outputs), len(panels))
    except AssertionError as first:
        # jupyterlab_widgets restores saved state twice when the kernel connects meanwhile, and
        # the restore that skips the notebook's state can finish first: views then say "model
        # not found" for good (seen once in 4 CI runs; cf. jupyterlab/jupyterlab#15361). The
        # README tells learners to reload; so does the test, once, and then nothing may fail.
        if "model not found" not in str(first):
            raise
        open_notebook(page, lab, served)
        views = wait_for_views(page, len(outputs), len(panels))
    if views["panels"]:
        page.locator(".sl-panel").first.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / f"opened-{lesson.stem}.png"))


def test_lessons_exist() -> None:
    assert lessons(), f"no lessons matching [0-9][0-9]_*.ipynb in {NOTEBOOKS}"


def test_widgets_extension_is_served(lab: Lab) -> None:
    """``make lab`` renders widgets only if jupyterlab_widgets is in the server's environment."""
    extensions = {e["name"]: e for e in lab.api("/lab/api/extensions")}
    names = ("@jupyter-widgets/jupyterlab-manager", "jupyter-widgets-jupyterlab-manager")
    [manager] = [extensions[name] for name in names if name in extensions] or [None]
    assert manager is not None, sorted(extensions)
    assert manager.get("enabled", True), manager


def test_course_settings_are_applied(lab: Lab) -> None:
    tracker = lab.api("/lab/api/settings/@jupyterlab/notebook-extension:tracker")
    assert tracker["schema"]["properties"]["autoStartDefaultKernel"]["default"] is True
    news = lab.api("/lab/api/settings/@jupyterlab/apputils-extension:notification")
    assert news["schema"]["properties"]["fetchNews"]["default"] == "false"


# -- lesson 02: the session explorer, clicked in the browser ---------------------------------------


def explorer_cell(notebook: nbformat.NotebookNode) -> int:
    for index, cell in enumerate(notebook.cells):
        shows = [o.get("data", {}).get("text/plain") for o in cell.get("outputs", [])]
        if cell.cell_type == "code" and (
            "SessionExplorer(" in cell.source or "<SessionExplorer>" in shows
        ):
            return index
    pytest.fail(f"{EXPLORER_LESSON} has no cell that displays SessionExplorer(...) yet")


def read_back(page: Any, key: str) -> list[dict[str, Any]]:
    output = run_in_kernel(page, READ_IN_KERNEL % key)
    assert not output.startswith("ERROR"), output
    return json.loads(output)


def test_session_explorer_round_trip(page: Any, lab: Lab, artifacts: Path) -> None:
    lesson = committed(EXPLORER_LESSON)
    index = explorer_cell(lesson)
    open_notebook(page, lab, EXPLORER_LESSON)
    clear_outputs(page)
    # Run the lesson up to the explorer, not beyond: its last cell stops the servers.
    if index + 1 < len(lesson.cells):
        page.evaluate(SELECT_CELL, index + 1)
        run(page, "notebook:run-all-above")
    else:
        run(page, "notebook:run-all-cells")
    state = wait_until_run(page, lesson, last=index)
    errors = unexpected_errors(state["cells"][: index + 1], lesson)
    assert not errors, "\n".join(errors)

    explorer = page.locator(".sl-explorer").first
    explorer.scroll_into_view_if_needed()
    status = explorer.locator(".sl-status")
    session_id = f"browser-{secrets.token_hex(4)}"
    key = f"session:{{{session_id}}}"

    # Create: fill the form, click, see it in the form and in Redis.
    explorer.locator(".sl-explorer-id input").fill(session_id)
    explorer.locator(".sl-explorer-user input").fill("U777")
    explorer.locator(".sl-explorer-name input").fill("Ada Browser")
    explorer.locator(".sl-explorer-theme select").select_option("light")
    explorer.locator(".sl-explorer-browser select").select_option("Firefox")
    explorer.locator(".sl-explorer-ttl input").fill("600")
    explorer.locator(".sl-explorer-create").click()
    status.locator(".sl-ok", has_text=f"Created {key}: it expires in 600 s.").wait_for()
    data = explorer.locator(".sl-explorer-data")
    assert "Ada Browser" in data.inner_text()
    assert f"HSET {key} " in explorer.locator(".sl-log").inner_text()
    [stored] = read_back(page, key)
    assert stored["data"] == {
        "user_id": "U777",
        "name": "Ada Browser",
        "preferences": {"theme": "light", "browser": "Firefox"},
    }
    assert 0 < stored["ttl"] <= 600

    # The countdown reaches the browser: the label goes below its first value by itself.
    ttl_left = explorer.locator(".sl-explorer-ttl-left")
    first = int(ttl_left.inner_text().removesuffix(" s"))
    page.wait_for_function(
        """([node, first]) => parseInt(node.textContent) < first""",
        arg=[ttl_left.element_handle(), first],
    )

    # Read and Update: the new name reaches Redis, the TTL is kept.
    explorer.locator(".sl-explorer-read").click()
    status.locator(".sl-ok", has_text=f"Read {key}.").wait_for()
    explorer.locator(".sl-explorer-name input").fill("Ada Updated")
    explorer.locator(".sl-explorer-update").click()
    status.locator(".sl-ok", has_text=f"Updated {key}").wait_for()
    assert "Ada Updated" in data.inner_text()
    [stored] = read_back(page, key)
    assert stored["data"]["name"] == "Ada Updated"
    assert 0 < stored["ttl"] <= 600

    # A bad TTL: a readable message in the form, nothing written.
    explorer.locator(".sl-explorer-ttl input").fill("abc")
    explorer.locator(".sl-explorer-touch").click()
    status.locator(".sl-error", has_text="InvalidTTL: TTL 'abc' is not a whole number").wait_for()
    assert read_back(page, key)[0]["ttl"] <= 600

    # Delete: gone from Redis and from the form.
    explorer.locator(".sl-explorer-delete").click()
    status.locator(".sl-ok", has_text=f"Deleted {key}: profile and cart.").wait_for()
    assert read_back(page, key) == []
    assert "(nil)" in data.inner_text()
    assert ttl_left.inner_text() == "no session"
    page.screenshot(path=str(artifacts / f"{Path(EXPLORER_LESSON).stem}-explorer.png"))

    # No callback wrote a traceback into the notebook meanwhile.
    cells = page.evaluate(CELLS)["cells"]
    assert not unexpected_errors(cells[: index + 1], lesson)
