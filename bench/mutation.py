"""Mutation testing of the modules where a silent break costs most: each mutant (one small change to the code) is
run against the tests of its own module, and a mutant those tests still pass is a gap in them.

The tool is cosmic-ray (PyPI), driven from here rather than through `cosmic-ray exec`, for three reasons:
- cosmic-ray mutates the module's whole syntax tree, module-level tables included (`_SCHEDULERS`'s
  `use_karras_sigmas`, `STATE_CHANGING`, `TURNED`); mutmut 3 mutates only the bodies of undecorated functions,
  through trampolines in a copy of the tree, so the scheduler table, `@staticmethod`s and `@property`s would go
  untested.
- `cosmic-ray exec` starts the test command afresh for every mutant: 2-5 s of importing torch, diffusers and
  Starlette each time, for about 900 mutants. Here one parent process imports those libraries once and forks a
  child per mutant; the child imports the project's code fresh (the mutated file included) and runs pytest.
- A mutant runs only the tests of its module that execute its line (recorded by coverage.py per test in a
  baseline run), fastest first, stopping at the first failure (`-x`). A mutant on a line no test executes
  survives without running anything.

Which mutants. cosmic-ray's operators, except that a binary or comparison operator is replaced only by its
natural counterparts (`+`/`-`, `*`/`/`, `/`/`//`, `<`/`<=` and the negation of each comparison, `is`/`is not`,
`in`/`not in`), not by all 11 others: `a + b` -> `a >> b` tells nothing `a - b` does not (Offutt's selective
mutation), and the full set would triple the run. Mutants inside annotations are left out: every module here has
`from __future__ import annotations`, so an annotation is never evaluated and changing it cannot change
behaviour. The model cache is its own module (`server/models/model_cache.py`); `server/http/images.py` is mutated only in
its caching and range functions.

Everything runs in a copy of the tree in a temporary folder, so an interrupted run never leaves a mutated file
behind. A hang counts as killed (a user notices); the per-mutant timeout is 3x the baseline time of the selected
tests plus 20 s.

Run:  .venv/bin/python bench/mutation.py                       # every module (hours on 2 busy cores: run --only)
      .venv/bin/python bench/mutation.py --only hub security   # modules whose path contains these words
      .venv/bin/python bench/mutation.py --only hub --survivors  # also print each survivor
      .venv/bin/python bench/mutation.py --json results.json
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class Target:
    module: str
    tests: tuple[str, ...]
    # Mutate only inside these functions or methods (by name, at any depth); None: the whole module.
    functions: frozenset[str] | None = None


TARGETS = (
    Target("server/http/security.py", ("tests/http/test_security.py",)),
    Target("server/models/paths.py", ("tests/models/test_search.py", "tests/reliability/test_access.py")),
    Target(
        "server/images/files.py",
        (
            "tests/images/test_files.py",
            "tests/images/test_traversal.py",
            # Start-up reconciliation (listing, remove_stray, write_thumbnail) and the PNG encoding of uploads.
            "tests/images/test_reconcile.py",
            "tests/images/test_upload.py",
            "tests/images/test_upload_bytes.py",
        ),
    ),
    Target("server/images/cache.py", ("tests/images/test_file_cache.py", "tests/images/test_files.py")),
    Target(
        "server/http/images.py",
        ("tests/images/test_files.py", "tests/images/test_traversal.py"),
        frozenset({"_FileResponse", "_not_modified", "_byte_range", "_range_response", "_serve"}),
    ),
    Target("server/ws/hub.py", ("tests/ws/test_hub.py",)),
    Target(
        "server/images/upload.py",
        # test_metadata.py: the foreign metadata an upload carries (A1111's EXIF UserComment, broken chunks).
        ("tests/images/test_upload.py", "tests/images/test_upload_bytes.py", "tests/images/test_metadata.py"),
    ),
    # The slowest tests last (real diffusers runs of the tiny model).
    Target("server/graph/schedulers.py", ("tests/graph/test_schedulers.py",)),
    Target("server/graph/cache.py", ("tests/graph/test_generate.py",)),
    Target(
        "server/models/model_cache.py",
        # test_model_cache.py: the cache on its own (exact budgets, the device tier, estimated_bytes).
        ("tests/models/test_model_cache.py", "tests/graph/test_loader.py", "tests/graph/test_memory_settings.py"),
    ),
    Target(
        "server/graph/denoise.py",
        ("tests/graph/test_denoise_parts.py", "tests/graph/test_denoise.py", "tests/graph/test_prompt_schedule.py"),
    ),
)

# Libraries the children would otherwise import again for every mutant. Never the project's own modules:
# the child must import those fresh, the mutated one among them.
PRELOAD = (
    "torch",
    "diffusers",
    "transformers",
    "safetensors.torch",
    "numpy",
    "PIL.Image",
    "PIL.PngImagePlugin",
    "starlette.applications",
    "starlette.testclient",
    "httpx",
    "msgspec",
    "aiosqlite",
    "yaml",
    "websockets",
    "uvicorn",
    "anyio",
    "multipart",
    "watchfiles",
    "pytest",
    "_pytest.assertion.rewrite",
    "hypothesis",  # its pytest plugin: 2-3 s to import on a busy machine
    "coverage",
)

NATURAL_BINARY = {
    "Add": {"Sub"},
    "Sub": {"Add"},
    "Mul": {"Div"},
    "Div": {"Mul", "FloorDiv"},
    "FloorDiv": {"Div", "Mul"},
    "Mod": {"FloorDiv"},
    "Pow": {"Mul"},
    "LShift": {"RShift"},
    "RShift": {"LShift"},
    "BitOr": {"BitAnd"},
    "BitAnd": {"BitOr"},
    "BitXor": {"BitAnd"},
}
NATURAL_COMPARISON = {
    "Eq": {"NotEq"},
    "NotEq": {"Eq"},
    "Lt": {"GtE", "LtE"},
    "LtE": {"Gt", "Lt"},
    "Gt": {"LtE", "GtE"},
    "GtE": {"Lt", "Gt"},
    "Is": {"IsNot"},
    "IsNot": {"Is"},
    "In": {"NotIn"},
    "NotIn": {"In"},
}


# parso's node types of a parameter list, whose bare `*` and `/` are markers, not operators.
PARAMETER_LISTS = frozenset({"parameters", "typedargslist", "varargslist", "lambdef"})


def natural(operator_name: str) -> bool:
    kind, *pair = operator_name.removeprefix("core/").split("_")
    if kind == "ReplaceBinaryOperator":
        return pair[1] in NATURAL_BINARY.get(pair[0], ())
    if kind == "ReplaceComparisonOperator":
        return pair[1] in NATURAL_COMPARISON.get(pair[0], ())
    return True


@dataclass
class Mutant:
    operator: str
    occurrence: int
    row: int
    col: int
    end: tuple[int, int] = (0, 0)  # where the mutated node ends (row, col)
    before: str = ""
    after: str = ""
    tests: list[str] = field(default_factory=list)
    outcome: str = ""  # killed, timeout, survived, uncovered, error
    seconds: float = 0.0

    def describe(self, module: str) -> str:
        return f"{module}:{self.row} {self.operator.removeprefix('core/')}: `{self.before}` -> `{self.after}`"


class Shape:
    """What the syntax tree says about each line: inside which functions, in an annotation, and which lines a
    mutant there makes run (its statement, or the header of a compound one)."""

    def __init__(self, source: str) -> None:
        self.tree = ast.parse(source)
        self.annotations: list[tuple[tuple[int, int], tuple[int, int]]] = []
        self.functions: list[tuple[str, int, int, int]] = []  # name, first body line, last line, def line
        self.function_bodies: list[tuple[int, int]] = []
        self.statements: list[tuple[int, int, int, int]] = []  # lineno, end, span start, span end
        for node in ast.walk(self.tree):
            for annotation in _annotations(node):
                self.annotations.append(
                    (
                        (annotation.lineno, annotation.col_offset),
                        (annotation.end_lineno or 0, annotation.end_col_offset or 0),
                    )
                )
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.functions.append((node.name, node.body[0].lineno, node.end_lineno or node.lineno, node.lineno))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.function_bodies.append((node.body[0].lineno, node.end_lineno or node.lineno))
            if isinstance(node, ast.ExceptHandler):
                self.statements.append((node.lineno, node.end_lineno or node.lineno, node.lineno, node.end_lineno or 0))
            elif isinstance(node, ast.stmt):
                end = node.end_lineno or node.lineno
                body = getattr(node, "body", None)
                header_end = body[0].lineno - 1 if isinstance(body, list) and body else end
                self.statements.append((node.lineno, end, node.lineno, max(node.lineno, header_end)))

    def in_annotation(self, row: int, col: int) -> bool:
        return any(start <= (row, col) < end for start, end in self.annotations)

    def enclosing(self, row: int) -> list[str]:
        """Names of the functions and classes whose body holds `row`, outermost first."""
        return [name for name, first, last, _ in sorted(self.functions, key=lambda f: f[3]) if first <= row <= last]

    def at_import(self, row: int) -> bool:
        """Whether `row` runs when the module is imported (module or class level, a decorator, a default)."""
        return not any(first <= row <= last for first, last in self.function_bodies)

    def span(self, row: int) -> range:
        """The lines whose execution means a mutant on `row` was executed: the innermost statement holding it
        (a compound statement's header only, when `row` is in it)."""
        holding = [s for s in self.statements if s[0] <= row <= s[1] and s[2] <= row <= s[3]]
        if not holding:
            return range(row, row + 1)
        innermost = max(holding, key=lambda s: s[0])
        return range(innermost[2], innermost[3] + 1)


def _annotations(node: ast.AST) -> list[ast.expr]:
    found: list[ast.expr] = []
    if isinstance(node, ast.arg) and node.annotation is not None:
        found.append(node.annotation)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
        found.append(node.returns)
    if isinstance(node, ast.AnnAssign):
        found.append(node.annotation)
    return found


def mutants_of(target: Target, source: str, shape: Shape) -> tuple[list[Mutant], dict[str, int]]:
    """The mutants to run, and how many cosmic-ray made that were left out, by reason."""
    from cosmic_ray.ast import ast_nodes, get_ast
    from cosmic_ray.commands.init import _operators

    left_out = {
        "other replacement of the same operator": 0,
        "annotation": 0,
        "outside the chosen functions": 0,
        "a parameter marker, not an operator": 0,
    }
    module_ast = get_ast(source)
    found: list[Mutant] = []
    for name, _, operator in _operators({}):
        positions = [(node, pos) for node in ast_nodes(module_ast) for pos in operator.mutation_positions(node)]
        for occurrence, (node, (start, end)) in enumerate(positions):
            row, col = start
            if not natural(name):
                left_out["other replacement of the same operator"] += 1
            elif "BinaryOperator" in name and node.parent is not None and node.parent.type in PARAMETER_LISTS:
                # cosmic-ray takes the `*` and `/` of `def f(a, *, b)` for multiplication and division.
                left_out["a parameter marker, not an operator"] += 1
            elif shape.in_annotation(row, col):
                left_out["annotation"] += 1
            elif target.functions is not None and not target.functions & set(shape.enclosing(row)):
                left_out["outside the chosen functions"] += 1
            else:
                found.append(Mutant(name, occurrence, row, col, end))
    return found, left_out


def mutated_source(source: str, mutant: Mutant) -> str:
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    if mutant.operator.endswith("ExceptionReplacer"):
        code = _replace_exception(source, mutant)
    else:
        code = mutate_code(source, get_operator(mutant.operator)(), mutant.occurrence)
    if code is None:
        raise RuntimeError(f"cosmic-ray applied no mutation for {mutant}")
    old, new = source.splitlines(), code.splitlines()
    changed = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), mutant.row - 1)
    mutant.before, mutant.after = old[changed].strip(), new[changed].strip()
    return code


def _replace_exception(source: str, mutant: Mutant) -> str:
    """The exception class an `except` names replaced by one nothing raises, as cosmic-ray's ExceptionReplacer
    does, but by position in the text: its own `mutate` fails on a dotted name (`except (binascii.Error, ...)`,
    a parso node without a `value`)."""
    (row, col), (end_row, end_col) = (mutant.row, mutant.col), mutant.end
    lines = source.splitlines(keepends=True)
    if end_row != row:
        raise RuntimeError(f"an exception name over several lines: {mutant}")
    line = lines[row - 1]
    lines[row - 1] = line[:col] + "CosmicRayTestingException" + line[end_col:]
    return "".join(lines)


# Children


def _run_child(work: Path, args: list[str], timeout: float, report: Path | None = None) -> tuple[str, float]:
    """pytest.main(args) in a forked child, in its own process group; ("passed" | "failed" | "error" |
    "timeout", seconds)."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        code = 70
        try:
            os.setpgid(0, 0)
            sys.dont_write_bytecode = True
            if not os.environ.get("MUTATION_VERBOSE"):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
            os.chdir(work)
            # What an ExceptionReplacer mutant's `except` names: an exception nothing raises, so the handler no
            # longer catches (without it, evaluating the clause would raise a NameError instead).
            import builtins

            from cosmic_ray.exceptions import CosmicRayTestingException

            builtins.CosmicRayTestingException = CosmicRayTestingException  # type: ignore[attr-defined]
            sys.path.insert(0, str(work))
            code = _child_main(work, args, report)
        finally:
            os._exit(code)
    deadline = started + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - started
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    # pytest: 0 all passed, 1 a test failed, 2 a collection error and 4 a conftest that fails to import (the
    # mutated module no longer imports; the same tests were collected in the baseline).
    outcome = {0: "passed", 1: "failed", 2: "failed", 4: "failed"}.get(code, "error")
    return outcome, time.monotonic() - started


def _child_main(work: Path, args: list[str], report: Path | None) -> int:
    import pytest

    if report is None:
        return int(pytest.main(args))
    # The baseline: coverage per test and each test's duration.
    import coverage

    module = str(work / args[0])
    cov = coverage.Coverage(data_file=None, include=[module], config_file=False)
    durations: dict[str, float] = {}

    class Recorder:
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_protocol(self, item: Any) -> Any:
            cov.switch_context(item.nodeid)
            yield
            cov.switch_context("")

        def pytest_runtest_logreport(self, report: Any) -> None:
            durations[report.nodeid] = durations.get(report.nodeid, 0.0) + report.duration

    cov.start()
    code = int(pytest.main(args[1:], plugins=[Recorder()]))
    cov.stop()
    lines = cov.get_data().contexts_by_lineno(module)
    report.write_text(json.dumps({"code": code, "durations": durations, "lines": lines}))
    return code


# The run


def run_target(target: Target, work: Path, show_survivors: bool) -> dict[str, Any]:
    path = work / target.module
    source = path.read_text(encoding="utf-8")
    shape = Shape(source)
    mutants, left_out = mutants_of(target, source, shape)
    common = ["-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", f"--basetemp={work / '.pytest-tmp'}"]

    report = work / "baseline.json"
    started = time.monotonic()
    outcome, seconds = _run_child(work, [target.module, *target.tests, *common], 1800, report)
    if outcome != "passed" or not report.exists():
        raise SystemExit(f"{target.module}: the baseline run of {' '.join(target.tests)} did not pass ({outcome})")
    baseline: dict[str, Any] = json.loads(report.read_text())
    durations: dict[str, float] = baseline["durations"]
    lines: dict[int, list[str]] = {int(k): v for k, v in baseline["lines"].items()}
    all_tests = sorted(durations, key=durations.__getitem__)
    print(f"\n{target.module}: {len(mutants)} mutants, tests {' '.join(target.tests)} (baseline {seconds:.0f} s)")

    for number, mutant in enumerate(mutants, 1):
        code = mutated_source(source, mutant)
        if shape.at_import(mutant.row):
            tests = all_tests
        else:
            contexts = {c for line in shape.span(mutant.row) for c in lines.get(line, ())}
            tests = all_tests if "" in contexts else sorted(contexts - {""}, key=lambda t: durations.get(t, 0))
        mutant.tests = tests
        if not tests:
            mutant.outcome = "uncovered"
        else:
            path.write_text(code, encoding="utf-8")
            try:
                timeout = 3 * sum(durations.get(t, 1.0) for t in tests) + 20
                result, mutant.seconds = _run_child(work, [*tests, *common], timeout)
            finally:
                path.write_text(source, encoding="utf-8")
            mutant.outcome = {"passed": "survived", "failed": "killed"}.get(result, result)
        mark = {"killed": ".", "timeout": "T", "survived": "S", "uncovered": "U", "error": "E"}[mutant.outcome]
        print(mark, end="" if number % 80 else "\n", flush=True)
    print()

    counts = {k: sum(m.outcome == k for m in mutants) for k in ("killed", "timeout", "survived", "uncovered", "error")}
    killed = counts["killed"] + counts["timeout"]
    total = len(mutants) - counts["error"]
    survivors = [m.describe(target.module) for m in mutants if m.outcome in ("survived", "uncovered")]
    if show_survivors:
        for line in survivors:
            print("  survived:", line)
    return {
        "module": target.module,
        "tests": list(target.tests),
        "functions": sorted(target.functions) if target.functions else None,
        "killed": killed,
        "survived": counts["survived"] + counts["uncovered"],
        "uncovered": counts["uncovered"],
        "errors": counts["error"],
        "total": total,
        "score": killed / total if total else 1.0,
        "left_out": left_out,
        "seconds": round(time.monotonic() - started, 1),
        "survivors": survivors,
        "errored": [m.describe(target.module) for m in mutants if m.outcome == "error"],
    }


def copy_tree(work: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("server", "tests", "static", "examples", "docs"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, work / name, ignore=ignore, symlinks=True)
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md"):
        shutil.copy2(REPO / name, work / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="modules whose path contains one of these words")
    parser.add_argument("--survivors", action="store_true", help="print every surviving mutant")
    parser.add_argument("--json", type=Path, help="write the figures and survivors here")
    args = parser.parse_args()
    targets = [t for t in TARGETS if not args.only or any(word in t.module for word in args.only)]

    # Stopped (SIGTERM): leave through the `with` below, which removes the copy of the tree.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for name in PRELOAD:
        __import__(name)
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="imagegraph-mutation-") as tmp:
        work = Path(tmp)
        copy_tree(work)
        for target in targets:
            results.append(run_target(target, work, args.survivors))
            r = results[-1]
            print(f"{r['module']}: {r['killed']} killed, {r['survived']} survived of {r['total']}: {r['score']:.1%}")
            if args.json:
                args.json.write_text(json.dumps({"modules": results}, indent=2) + "\n")
    elapsed = time.monotonic() - started

    print(f"\n{'module':<28} {'killed':>6} {'survived':>8} {'total':>5} {'score':>6}  time")
    for r in results:
        print(
            f"{r['module']:<28} {r['killed']:>6} {r['survived']:>8} {r['total']:>5} {r['score']:>6.1%}  {r['seconds']:.0f} s"
        )
    killed, total = sum(r["killed"] for r in results), sum(r["total"] for r in results)
    survived = sum(r["survived"] for r in results)
    print(f"{'overall':<28} {killed:>6} {survived:>8} {total:>5} {killed / max(total, 1):>6.1%}  {elapsed:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"modules": results, "seconds": round(elapsed, 1)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
