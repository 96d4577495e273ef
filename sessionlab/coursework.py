"""The student edition of the lessons, and grading of submissions, with Otter-Grader.

    python -m sessionlab.coursework student [notebooks/NN_x.ipynb ...]   # -> student/NN_x.ipynb
    python -m sessionlab.coursework grade DIR                            # -> DIR/grades.csv

``notebooks/NN_*.ipynb`` are the masters (solutions, Otter's format: README "Coursework").
``otter assign`` makes the student edition and the autograder (with the hidden tests) of each;
``otter run`` grades a submission in its own kernel, so each submission gets its own private
redis-server (the embedded default of ``connect()``). Submissions are graded in parallel, one
worker process per core (``GRADE_JOBS`` to change), each importing Otter once.
Otter is imported only here, so the library itself never needs it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .config import ENV_FILE_VARIABLE, SERVER_VARIABLES

ROOT = Path(__file__).resolve().parent.parent
MASTERS = ROOT / "notebooks"
STUDENT = ROOT / "student"
LESSON_GLOB = "[0-9][0-9]_*.ipynb"
CONFIG_MARK = "# ASSIGNMENT CONFIG"
#: Cell metadata the student edition keeps (Otter's locks and tags); the rest is run noise.
KEEP_CELL_METADATA = ("tags", "editable", "deletable", "otter")
KEEP_NOTEBOOK_METADATA = ("kernelspec", "language_info", "otter")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in a kernel's traceback
#: A submission's lesson, from its file name when its metadata does not say: "alice_02_x.ipynb".
LESSON_NUMBER = re.compile(r"(?:^|[^0-9])([0-9]{2})_")


def masters() -> list[Path]:
    return sorted(MASTERS.glob(LESSON_GLOB))


def has_exercises(notebook: nbformat.NotebookNode) -> bool:
    return any(
        cell.cell_type == "raw" and cell.source.lstrip().startswith(CONFIG_MARK)
        for cell in notebook.cells
    )


# -- the student edition ----------------------------------------------------------------------


def clean_student(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what changes from run to run (cell ids, timings, Python patch version)."""
    notebook.metadata = {k: v for k, v in notebook.metadata.items() if k in KEEP_NOTEBOOK_METADATA}
    notebook.metadata.get("language_info", {}).pop("version", None)
    for cell in notebook.cells:
        cell.pop("id", None)
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEEP_CELL_METADATA}
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.nbformat_minor = 4
    return notebook


def _quiet_assign(master: Path, out: Path) -> None:
    """``otter assign`` without running tests or making PDFs; its chatter is dropped."""
    from otter.assign import main as assign

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assign(str(master), str(out), no_pdfs=True, no_run_tests=True)


def assign(master: Path, out: Path) -> tuple[Path, Path | None]:
    """The student notebook and the autograder zip of one master (``None`` if no exercises)."""
    notebook = nbformat.read(master, as_version=4)
    target = out / master.stem
    target.mkdir(parents=True)
    if not has_exercises(notebook):  # a lesson without exercises yet: the lesson itself
        student = target / master.name
        nbformat.write(clean_student(notebook), student)
        return student, None
    _quiet_assign(master, target)
    [zip_file] = (target / "autograder").glob("*.zip")
    return target / "student" / master.name, zip_file


def student_edition(notebook: Path) -> str:
    """The cleaned text ``student/<name>`` must hold (what ``make student`` writes)."""
    return nbformat.writes(clean_student(nbformat.read(notebook, as_version=4))) + "\n"


def write_student(paths: Iterable[Path]) -> list[Path]:
    STUDENT.mkdir(exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="sessionlab-assign-") as scratch:
        for master in paths:
            student, _ = assign(master, Path(scratch))
            target = STUDENT / master.name
            target.write_text(student_edition(student), encoding="utf-8")
            written.append(target)
    return written


# -- grading ----------------------------------------------------------------------------------


@dataclass
class Grade:
    file: str
    lesson: str
    score: float = 0.0
    exercises: dict[str, float] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0
    cell_errors: list[str] = field(default_factory=list)


def lesson_of(path: Path, lessons: Iterable[str]) -> str | None:
    """The lesson a submission answers: Otter's metadata, else ``NN_`` in its file name."""
    known = list(lessons)
    with contextlib.suppress(Exception):
        name = nbformat.read(path, as_version=4).metadata.get("otter", {}).get("assignment_name")
        if name in known:
            return name
    match = LESSON_NUMBER.search(path.name)
    if match:
        for lesson in known:
            if lesson.startswith(match.group(1) + "_"):
                return lesson
    return None


def grading_environment() -> dict[str, str]:
    """No ``.env`` and no server named: every kernel starts its own private redis-server."""
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    env[ENV_FILE_VARIABLE] = os.devnull
    return env


def mark_checks_in_place(notebook: nbformat.NotebookNode) -> None:
    """Make Otter run each question's tests right after its visible check cell.

    Otter runs a question's tests after the cell whose metadata ``otter.tests`` names it (the
    student edition has it), else after the whole notebook, when a server the check needs
    may be stopped already. A master has no such metadata: mark the cell before each
    ``# BEGIN TESTS`` (the visible check) with the name from its ``# BEGIN QUESTION``.
    """
    question = None
    for index, cell in enumerate(notebook.cells):
        text = cell.source.strip()
        if cell.cell_type != "raw":
            continue
        if text.startswith("# BEGIN QUESTION"):
            match = re.search(r"^name:\s*(\S+)", text, re.MULTILINE)
            question = match.group(1) if match else None
        elif text.startswith("# BEGIN TESTS") and question and index > 0:
            before = notebook.cells[index - 1]
            before.metadata.setdefault("otter", {}).setdefault("tests", [question])


def _otter_run(submission: Path, zip_file: Path, lesson: str, scratch: Path) -> Grade:
    """Grade one submission with ``otter run`` (in a worker process; its kernel is its own)."""
    started = time.perf_counter()
    grade = Grade(submission.name, lesson)
    work = Path(tempfile.mkdtemp(prefix="grade-", dir=scratch))
    notebook = nbformat.read(submission, as_version=4)
    notebook.metadata.setdefault("otter", {})["assignment_name"] = lesson  # masters lack it
    mark_checks_in_place(notebook)
    copy = work / submission.name
    nbformat.write(notebook, copy)
    from otter.run import main as otter_run

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            results = otter_run(
                str(copy), autograder=str(zip_file), output_dir=str(work), no_logo=True
            )
    except Exception as error:  # a broken submission file: report it in the row, go on
        grade.error = f"{type(error).__name__}: {error}".splitlines()[0]
    else:
        scored = [
            t
            for t in json.loads((work / "results.json").read_text())["tests"]
            if t.get("max_score")
        ]
        grade.exercises = {t["name"]: t["score"] / t["max_score"] for t in scored}
        total = sum(t["max_score"] for t in scored)
        grade.score = sum(t["score"] for t in scored) / total if total else 0.0
        grade.cell_errors = cell_errors(results.notebook)
    grade.seconds = time.perf_counter() - started
    return grade


def cell_errors(notebook: nbformat.NotebookNode) -> list[str]:
    """Errors the run showed outside ``raises-exception`` cells: a student edition has none."""
    found = []
    for index, cell in enumerate(notebook.cells):
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                # the line that raised, as IPython marks it ("---> 12 assert x"), without colours
                trace = ANSI.sub("", "\n".join(output.get("traceback", [])))
                raised = [line.strip() for line in trace.splitlines() if "--->" in line]
                at = f" at {raised[-1]}" if raised else ""
                what = f"{output['ename']}: {output['evalue']}".strip()
                found.append(f"cell {index}{at}: {what}"[:600])
    return found


def _worker_context() -> multiprocessing.context.BaseContext:
    """Workers forked from a fresh server that imported Otter once (plain fork is unsafe when
    the caller, pytest or a kernel, runs threads); spawn where there is no forkserver."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["otter.run"])
    return context


def _init_worker() -> None:
    """Kernels inherit this: no ``.env``, no server named, so each starts a private server."""
    env = grading_environment()
    os.environ.clear()
    os.environ.update(env)


def grade(directory: Path, jobs: int | None = None) -> list[Grade]:
    """Grade every ``.ipynb`` in ``directory`` (in parallel) and write ``directory/grades.csv``."""
    submissions = sorted(p for p in directory.glob("*.ipynb") if p.is_file())
    by_stem = {m.stem: m for m in masters()}
    lessons = {s: lesson_of(s, by_stem) for s in submissions}
    grades: list[Grade] = []
    with tempfile.TemporaryDirectory(prefix="sessionlab-grade-") as tmp:
        scratch = Path(tmp)
        needed = sorted({lesson for lesson in lessons.values() if lesson})
        autograders = {name: assign(by_stem[name], scratch / "assign")[1] for name in needed}
        jobs = jobs or int(os.environ.get("GRADE_JOBS", 0)) or os.cpu_count() or 2
        context = _worker_context()
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker) as pool:
            futures = []
            # Later lessons run longer: start them first, so the workers finish together.
            for submission, lesson in sorted(
                lessons.items(), key=lambda sl: sl[1] or "", reverse=True
            ):
                zip_file = autograders.get(lesson) if lesson else None
                if zip_file is None:
                    why = "no lesson matches" if lesson is None else "the lesson has no exercises"
                    grades.append(Grade(submission.name, lesson or "", error=why))
                    continue
                futures.append(pool.submit(_otter_run, submission, zip_file, lesson, scratch))
            grades.extend(future.result() for future in futures)
    grades.sort(key=lambda g: g.file)
    write_csv(directory / "grades.csv", grades)
    return grades


def write_csv(path: Path, grades: list[Grade]) -> None:
    columns: list[str] = []
    for g in sorted(grades, key=lambda g: g.lesson):
        for name in g.exercises:
            column = f"{g.lesson[:2]}.{name}"
            if column not in columns:
                columns.append(column)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "lesson", "score", *columns])
        for g in grades:
            by_column = {f"{g.lesson[:2]}.{name}": value for name, value in g.exercises.items()}
            writer.writerow(
                [
                    g.file,
                    g.lesson,
                    _fraction(g.score),
                    *(_fraction(by_column.get(c)) for c in columns),
                ]
            )


def _fraction(value: float | None) -> str:
    return "" if value is None else str(round(value, 4))


# -- command line -----------------------------------------------------------------------------


def _print_grades(grades: list[Grade], elapsed: float) -> Iterator[str]:
    for g in grades:
        extra = f"  ERROR: {g.error}" if g.error else ""
        if g.cell_errors:
            extra += f"  ({len(g.cell_errors)} cells raised; first: {g.cell_errors[0]})"
        yield f"{g.file:40} {g.lesson:24} score {g.score:.3f}  ({g.seconds:.1f} s){extra}"
    yield f"{len(grades)} notebooks graded in {elapsed:.1f} s"


def main(argv: list[str]) -> int:
    if argv[:1] == ["student"]:
        paths = [Path(p) for p in argv[1:]] or masters()
        for path in write_student(paths):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    if argv[:1] == ["grade"] and len(argv) == 2:
        directory = Path(argv[1])
        started = time.perf_counter()
        grades = grade(directory)
        for line in _print_grades(grades, time.perf_counter() - started):
            print(line)
        print(f"wrote {directory / 'grades.csv'}")
        return 1 if any(g.error for g in grades) else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    # run the imported module, so worker processes find its functions by their real name
    from sessionlab import coursework

    sys.exit(coursework.main(sys.argv[1:]))
