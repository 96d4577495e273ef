"""Coursework (issue 8): lessons re-run safely, the student edition is current and runs, grading.

Every test is parametrized over ``notebooks/[0-9][0-9]_*.ipynb``, so a new lesson is covered
without touching this file. Each lesson runs as a learner runs it: its student edition, then its
master, in one kernel (``test_student_edition_then_master_run_in_one_kernel``: every cell but the
answers runs twice, every check says ❌ then ✅). That is also the "runs on this server" check:
``make test`` runs it on the second server (Redis 7.0), whose kernel gets it from
``SECOND_REDIS_SERVER_BIN``.

Grading executes whole lessons, so it runs once per session (``graded``), in parallel, and only
what the other runs cannot prove: Otter grades by doctests that compare each check's one line,
and every check of a master shows a committed ✅ line that nbval compares
(``test_every_check_of_a_master_says_ok``), while every student edition already runs top to
bottom with ❌ lines above. So Otter grades one lesson end to end (:data:`GRADED_MASTER`: the
master 1.0, its untouched student edition 0.0) and the fixtures (masters with one wrong answer),
rather than both editions of every lesson again (~160 s of CPU for executing the lessons alone).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from sessionlab import coursework

LESSONS = coursework.masters()
WITH_EXERCISES = [p for p in LESSONS if coursework.has_exercises(nbformat.read(p, as_version=4))]
MIN_EXERCISES = 3
#: The server the lessons' kernels use in that run, when it is not the run's own
#: (``REDIS_SERVER_BIN``): ``make test`` sets it to the system's Redis 7.0.
SECOND_SERVER = "SECOND_REDIS_SERVER_BIN"
#: The master Otter grades end to end (the shortest lesson with exercises; see the docstring).
GRADED_MASTER = WITH_EXERCISES[0]
#: Grading processes: one more than the 2 cores of a CI machine, as a graded lesson often waits
#: (on its servers, on the clock). With 4, lesson 04's timed eviction claims failed once in CI.
GRADE_JOBS = 3
ANSI = coursework.ANSI
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def stem(path: Path) -> str:
    return path.stem


def questions(notebook: nbformat.NotebookNode) -> list[str]:
    names = []
    for cell in notebook.cells:
        if cell.cell_type == "raw" and cell.source.lstrip().startswith("# BEGIN QUESTION"):
            names += re.findall(r"^name:\s*(\S+)", cell.source, re.MULTILINE)
    return names


# -- every lesson as a learner runs it: student edition, then master, in one kernel --------


def check_cells(notebook: nbformat.NotebookNode) -> set[int]:
    """Indexes of the cells that call a check: in a master, the code cells between ``# BEGIN
    TESTS`` and ``# END TESTS`` (hidden ones too); in a student edition, those Otter tagged."""
    found, inside = set(), False
    for index, cell in enumerate(notebook.cells):
        text = cell.source.strip()
        if cell.cell_type == "raw":
            inside = text.startswith("# BEGIN TESTS") or (inside and "# END TESTS" not in text)
        elif cell.cell_type == "code" and (inside or "otter" in cell.metadata):
            found.add(index)
    return found


def shown(cell: nbformat.NotebookNode) -> str:
    """What a cell printed, as text."""
    return "".join(
        o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs
    ).strip()


@pytest.mark.slow
@pytest.mark.second_server  # also the "lessons run on Redis 7.x" check
@pytest.mark.parametrize("lesson", LESSONS, ids=stem)
def test_student_edition_then_master_run_in_one_kernel(lesson: Path) -> None:
    """What a learner does: Run All on the untouched student edition (in ``student/``, as
    ``make lab`` opens it), then, exercises solved, Run All again in the same kernel (the
    master). No cell may raise either time, so every cell but the answers runs twice; every
    check says ❌ the first time and ✅ the second, hidden checks included."""
    editions = [
        ("student edition", nbformat.read(coursework.STUDENT / lesson.name, as_version=4), "❌"),
        ("master", nbformat.read(lesson, as_version=4), "✅"),
    ]
    client = NotebookClient(
        editions[0][1],
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(coursework.STUDENT)}},
    )
    env = dict(os.environ)
    if os.environ.get(SECOND_SERVER):
        env["REDIS_SERVER_BIN"] = os.environ[SECOND_SERVER]
    failures = []
    with client.setup_kernel(env=env):
        for name, notebook, verdict in editions:
            client.nb = notebook
            checks = check_cells(notebook)
            assert checks, f"the {name} of {lesson.name} has no check cells"
            for index, cell in enumerate(notebook.cells):
                if cell.cell_type != "code" or "skip-execution" in cell.metadata.get("tags", []):
                    continue
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as error:
                    plain = ANSI.sub("", str(error)).strip()
                    first = plain.splitlines()[-1:] or ["?"]
                    failures.append(f"{name}, cell {index}: {first[0]}")
                    continue
                line = shown(cell)
                if index in checks and (
                    len(line.splitlines()) != 1 or not line.startswith(verdict)
                ):
                    failures.append(f"{name}, check cell {index} shows {line[:120]!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.pinned_only
@pytest.mark.parametrize("lesson", LESSONS, ids=stem)
def test_committed_widgets_have_saved_state(lesson: Path) -> None:
    """Every widget output has its model in the saved state (regenerate_notebooks keeps it), so
    GitHub shows the panel instead of "model not found"."""
    notebook = nbformat.read(lesson, as_version=4)
    ids = [
        output["data"][WIDGET_VIEW]["model_id"]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if WIDGET_VIEW in output.get("data", {})
    ]
    saved = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    missing = [model_id for model_id in ids if model_id not in saved]
    command = f"make notebooks NOTEBOOKS={lesson.relative_to(coursework.ROOT)}"
    assert not missing, f"{len(missing)} of {len(ids)} widget outputs lack saved state: {command}"


# -- the student edition ------------------------------------------------------------------------


@pytest.mark.pinned_only
@pytest.mark.parametrize("lesson", LESSONS, ids=stem)
def test_lesson_has_exercises(lesson: Path) -> None:
    names = questions(nbformat.read(lesson, as_version=4))
    assert len(names) >= MIN_EXERCISES, f"{lesson.name} has {len(names)} exercises: {names}"
    assert len(set(names)) == len(names), f"question names repeat: {names}"


@pytest.mark.pinned_only
@pytest.mark.parametrize("lesson", LESSONS, ids=stem)
def test_student_edition_is_current(lesson: Path, tmp_path: Path) -> None:
    """student/ is committed: it must be what ``make student`` writes from the master now."""
    committed = coursework.STUDENT / lesson.name
    assert committed.exists(), f"student/{lesson.name} is missing: run make student"
    fresh, _ = coursework.assign(lesson, tmp_path)
    assert committed.read_text(encoding="utf-8") == coursework.student_edition(fresh), (
        f"student/{lesson.name} is stale: run `make student` and commit it"
    )


@pytest.mark.pinned_only
@pytest.mark.parametrize("lesson", LESSONS, ids=stem)
def test_student_edition_compiles(lesson: Path) -> None:
    """Otter replaces each ``# SOLUTION`` line by ``...``: a solution split over lines (as
    ``ruff format`` splits a long one) leaves a broken cell. Caught here in a second, rather
    than by grading or the browser after minutes."""
    student = nbformat.read(coursework.STUDENT / lesson.name, as_version=4)
    broken = []
    for index, cell in enumerate(student.cells):
        if cell.cell_type == "code":
            try:
                compile(cell.source, f"cell {index}", "exec")
            except SyntaxError as error:
                broken.append(f"cell {index}: {error.msg}: {cell.source[:80]!r}")
    assert not broken, "\n".join(broken)


@pytest.mark.pinned_only
@pytest.mark.parametrize("lesson", WITH_EXERCISES, ids=stem)
def test_student_edition_hides_answers(lesson: Path) -> None:
    student = nbformat.read(coursework.STUDENT / lesson.name, as_version=4)
    text = "\n".join(cell.source for cell in student.cells)
    assert "# SOLUTION" not in text and "# BEGIN SOLUTION" not in text
    assert "# HIDDEN" not in text and "_hidden(" not in text
    public = student.metadata["otter"]["tests"]
    hidden = [
        case
        for test in public.values()
        for suite in test["suites"]
        for case in suite["cases"]
        if case["hidden"]
    ]
    assert hidden == [], "hidden tests leaked into the student edition's metadata"


# -- grading ------------------------------------------------------------------------------------


def wrong_answer(master: Path, solution_line: str, answer: str) -> nbformat.NotebookNode:
    """The master with one solution line replaced by a wrong answer."""
    notebook = nbformat.read(master, as_version=4)
    hits = [cell for cell in notebook.cells if solution_line in cell.source]
    assert len(hits) == 1, f"{solution_line!r} not found once in {master.name}"
    hits[0].source = hits[0].source.replace(solution_line, answer)
    return notebook


#: Submissions with known mistakes, graded with the masters: (file, master, line, answer, score).
FIXTURES = [
    # a wrong prediction: 1 of 3 exercises wrong
    (
        "wrong-prediction_01_connecting.ipynb",
        "01_connecting.ipynb",
        "my_prediction = 5  # SOLUTION",
        "my_prediction = 3",
        2 / 3,
    ),
    # the visible check passes without NX, the hidden one does not: half of that exercise
    (
        "no-nx_01_connecting.ipynb",
        "01_connecting.ipynb",
        'my_command = ["SET", "greeting", "hello", "EX", "60", "NX"]  # SOLUTION',
        'my_command = ["SET", "greeting", "hello", "EX", "60"]',
        (0.5 + 1 + 1) / 3,
    ),
    # the update loses the TTL (public check fails), but writes only if present, in one SET
    (
        "lost-ttl_02_session_crud.ipynb",
        "02_session_crud.ipynb",
        "xx=True, keepttl=True))",
        "xx=True))",
        (1 + 0.5 + 1 + 1) / 4,
    ),
]


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Grade, in one parallel run: one master, its student edition, the fixtures."""
    folder = tmp_path_factory.mktemp("submissions")
    shutil.copy(GRADED_MASTER, folder / GRADED_MASTER.name)
    shutil.copy(coursework.STUDENT / GRADED_MASTER.name, folder / f"student_{GRADED_MASTER.name}")
    for name, master, line, answer, _score in FIXTURES:
        if (coursework.MASTERS / master) in WITH_EXERCISES:
            nbformat.write(wrong_answer(coursework.MASTERS / master, line, answer), folder / name)
    grades = coursework.grade(folder, jobs=GRADE_JOBS)
    errors = {g.file: g.error for g in grades if g.error}
    assert not errors, errors
    with (folder / "grades.csv").open(encoding="utf-8") as rows:
        table = {row["file"]: row for row in csv.DictReader(rows)}
    table["_cell_errors"] = {g.file: "\n".join(g.cell_errors) for g in grades if g.cell_errors}
    return table


@pytest.mark.pinned_only
@pytest.mark.parametrize("lesson", WITH_EXERCISES, ids=stem)
def test_every_check_of_a_master_says_ok(lesson: Path) -> None:
    """Each cell between ``# BEGIN TESTS`` and ``# END TESTS`` (the checks Otter grades with,
    hidden ones included) shows one committed ✅ line, and nbval compares it on every run: so
    each master passes every check on the pinned server, as Otter would grade it."""
    notebook = nbformat.read(lesson, as_version=4)
    checks, wrong = check_cells(notebook), []
    for index in sorted(checks):
        cell = notebook.cells[index]
        line, tags = shown(cell), cell.metadata.get("tags", [])
        if (
            len(line.splitlines()) != 1
            or not line.startswith("✅")
            or "NBVAL" in cell.source + str(tags)
        ):
            wrong.append(f"cell {index} {cell.source[:50]!r} shows {line[:80]!r} (tags {tags})")
    assert len(checks) >= len(questions(notebook)), f"{len(checks)} check cells"
    assert not wrong, "\n".join(wrong)


@pytest.mark.slow
@pytest.mark.pinned_only
@pytest.mark.parametrize("lesson", [GRADED_MASTER], ids=stem)
def test_solutions_score_one(graded: dict[str, dict[str, str]], lesson: Path) -> None:
    row = graded[lesson.name]
    assert row["lesson"] == lesson.stem
    exercises = {k: v for k, v in row.items() if k.startswith(lesson.stem[:2] + ".") and v}
    assert len(exercises) == len(questions(nbformat.read(lesson, as_version=4)))
    assert float(row["score"]) == 1.0, row


@pytest.mark.slow
@pytest.mark.pinned_only
@pytest.mark.parametrize("lesson", [GRADED_MASTER], ids=stem)
def test_untouched_student_edition_scores_zero_and_runs(
    graded: dict[str, dict[str, str]], lesson: Path
) -> None:
    """With every stub left as ``...`` the lesson runs top to bottom; every check says ❌."""
    name = f"student_{lesson.name}"
    assert name not in graded["_cell_errors"], graded["_cell_errors"].get(name)
    assert float(graded[name]["score"]) == 0.0, graded[name]


@pytest.mark.slow
@pytest.mark.pinned_only
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda f: f[0].split("_")[0])
def test_wrong_answers_score_accordingly(graded: dict[str, dict[str, str]], fixture: tuple) -> None:
    name, master, _line, _answer, score = fixture
    if (coursework.MASTERS / master) not in WITH_EXERCISES:
        pytest.skip(f"{master} has no exercises")
    assert float(graded[name]["score"]) == pytest.approx(score, abs=1e-3), graded[name]
