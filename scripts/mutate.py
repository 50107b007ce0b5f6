"""A small mutation run over the delivery, extract and quality code (issue #16 item 4): ``make mutants``.

Each mutant is one small change to one of ``retention/delivery.py``, ``retention/extract.py`` and
``retention/quality.py``, applied to a copy of the repository in a temporary folder (the working
tree is never touched). The fast tests that cover the file then run against the copy, stopping
at the first failure (``pytest -x``): a failure kills the mutant; a mutant under which every test
passes survives and is listed with its file, line and change.

The mutations, found in the code's syntax tree:

* comparisons: ``<`` and ``<=``, ``>`` and ``>=`` swapped (boundaries); with ``--all`` also
  ``==`` and ``!=``, ``is`` and ``is not``, ``in`` and ``not in`` (flips, about 100 more mutants);
* conditions: each operand of an ``and`` removed, and each condition of SQLAlchemy's ``and_(...)``
  and of a ``.where(a, b, ...)`` removed;
* ``min(a, b)`` and ``max(a, b)`` replaced by each argument;
* whole-number constants in a comparison moved by one (the direction that is not a boundary swap).

The four mutants issue #16 named (which no test caught before ``tests/test_mutants.py``) are
run first and reported on their own.

Why a script rather than mutmut 3 or cosmic-ray: mutmut 3 writes its ``mutants/`` folder into
the working tree, first runs the configured test suite to learn which tests reach which function,
and switches mutants on through trampolines inside its own pytest process, so tests that run the
code in a child process (``python -m retention.delivery`` in the crash test, Airflow's task
runner) see the unmutated package; cosmic-ray needs a session database and a test command per
module. A copy of the tree, each file's own fast tests and one pytest process per mutant keep a
run small, free of extra dependencies, and safe to start while the tree is being edited.

Usage: ``python scripts/mutate.py [--only delivery extract quality] [--named | --all] [--timeout SECONDS]``.
Exit status 0 when every named mutant is killed (survivors of the generic set are reported, not
fatal: some are equivalent, e.g. a boundary no input can reach).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The mutated files and the fast tests run for each (SQLite only; tests/test_mutants.py first).
TARGETS: dict[str, list[str]] = {
    "retention/delivery.py": ["tests/test_mutants.py", "tests/test_delivery.py"],
    "retention/extract.py": [
        "tests/test_mutants.py",
        "tests/test_extract.py",
        "tests/test_extract_contract.py",
    ],
    "retention/quality.py": [
        "tests/test_mutants.py",
        "tests/test_extract_contract.py",
        "tests/test_extract.py",
    ],
}

#: Issue #16's four mutants: (file, exact text, replacement, what it removes).
NAMED = [
    (
        "retention/delivery.py",
        "        box.c.send_before > until,  # never outside the customer's local send window\n",
        "",
        "remove `send_before > until` from the due clause",
    ),
    (
        "retention/delivery.py",
        "                box.c.lease_owner == owner,\n"
        '                box.c.status.in_(("sending", "unknown")),',
        '                box.c.status.in_(("sending", "unknown")),',
        "remove `lease_owner == owner` when a reply is recorded",
    ),
    (
        "retention/quality.py",
        "    if quantity < 1:\n",
        "    if quantity < 0:\n",
        "quantity rule `< 1` -> `< 0`",
    ),
    (
        "retention/extract.py",
        "    return min(mark, night.window_start_naive)\n",
        "    return mark\n",
        "re-run window `min(mark, night.window_start_naive)` -> `mark`",
    ),
]

#: Not part of the source: never copied.
_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
    ".ruff_cache", ".hypothesis", "node_modules", "mutants",
)  # fmt: skip

_SWAP = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}  # fmt: skip
_SYMBOL = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}  # fmt: skip


@dataclasses.dataclass
class Mutant:
    path: str  # relative to the repository
    line: int
    change: str
    source: str  # the whole mutated file
    named: bool = False
    outcome: str = ""  # killed, survived, timeout
    seconds: float = 0.0
    killer: str = ""


def _short(node: ast.AST, width: int = 70) -> str:
    text = ast.unparse(node)
    return text if len(text) <= width else text[: width - 3] + "..."


def _replace(source: str, node: ast.AST, text: str) -> str:
    """``source`` with ``node``'s segment replaced by ``text``."""
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.encode()))
    data = source.encode()
    start = offsets[node.lineno - 1] + node.col_offset
    end = offsets[node.end_lineno - 1] + node.end_col_offset
    return (data[:start] + text.encode() + data[end:]).decode()


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


#: Boundary swaps; with ``--all`` also the negations (``==``/``!=``, ``is``, ``in``), which the
#: tests nearly always catch and which would double the run.
_BOUNDARY = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
#: The constant change that is not the boundary swap in disguise (for whole numbers, ``x < n + 1``
#: is ``x <= n``): ``<`` and ``>=`` take ``n - 1``, the others ``n + 1``.
_CONSTANT_DELTA = {ast.Lt: -1, ast.GtE: -1, ast.LtE: 1, ast.Gt: 1, ast.Eq: 1, ast.NotEq: 1}


def _compare_mutations(node: ast.Compare, negations: bool) -> list[tuple[ast.AST, str]]:
    found = []
    for i, op in enumerate(node.ops):
        if type(op) in _BOUNDARY or (negations and type(op) in _SWAP):
            ops = list(node.ops)
            ops[i] = _SWAP[type(op)]()
            change = f"`{_SYMBOL[type(op)]}` -> `{_SYMBOL[type(ops[i])]}` in `{_short(node)}`"
            found.append((ast.Compare(node.left, ops, node.comparators), change))
        value = node.comparators[i]
        if isinstance(value, ast.Constant) and type(value.value) is int and type(op) in _CONSTANT_DELTA:
            comparators = list(node.comparators)
            comparators[i] = ast.Constant(value.value + _CONSTANT_DELTA[type(op)])
            change = f"constant {value.value} -> {comparators[i].value} in `{_short(node)}`"
            found.append((ast.Compare(node.left, node.ops, comparators), change))
    return found


def _condition_mutations(node: ast.AST) -> list[tuple[ast.AST, str]]:
    found = []
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        for i, value in enumerate(node.values):
            rest = node.values[:i] + node.values[i + 1 :]
            mutated = rest[0] if len(rest) == 1 else ast.BoolOp(ast.And(), rest)
            found.append((mutated, f"remove `{_short(value)}` from `... and ...`"))
    elif isinstance(node, ast.Call) and not node.keywords:
        name = _call_name(node)
        if name in ("and_", "where") and len(node.args) >= 2:
            for i, arg in enumerate(node.args):
                mutated = ast.Call(node.func, node.args[:i] + node.args[i + 1 :], [])
                found.append((mutated, f"remove `{_short(arg)}` from {name}(...)"))
        elif name in ("min", "max") and len(node.args) == 2:
            found.extend((arg, f"`{_short(node)}` -> `{_short(arg)}`") for arg in node.args)
    return found


def generic_mutants(path: str, source: str, negations: bool = False) -> list[Mutant]:
    found: list[Mutant] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            mutations = _compare_mutations(node, negations)
        else:
            mutations = _condition_mutations(node)
        for replacement, change in mutations:
            found.append(Mutant(path, node.lineno, change, _replace(source, node, ast.unparse(replacement))))
    return found


def named_mutants() -> list[Mutant]:
    mutants = []
    for path, old, new, change in NAMED:
        source = (ROOT / path).read_text()
        if source.count(old) != 1:
            raise SystemExit(f"scripts/mutate.py: the named mutant '{change}' no longer matches {path} once")
        line = source[: source.index(old)].count("\n") + 1
        mutants.append(Mutant(path, line, change, source.replace(old, new), named=True))
    return mutants


def _copy_tree(into: Path) -> Path:
    copy = into / "tree"
    shutil.copytree(ROOT, copy, ignore=_IGNORE)
    return copy


def _environment(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    env["PYTHONPATH"] = str(copy)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    where = subprocess.run(
        [sys.executable, "-c", "import retention; print(retention.__file__)"],
        cwd=copy, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(where).is_relative_to(copy):
        raise SystemExit(f"scripts/mutate.py: retention imports from {where}, not from the copy {copy}")
    return env


def _run_tests(copy: Path, env: dict[str, str], tests: list[str], timeout: float) -> tuple[str, float, str]:
    start = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    command += ["-m", "not slow and not airflow and not crash", "--timeout", str(int(timeout)), *tests]
    try:
        result = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, f"(no result within {timeout:.0f} s)"
    seconds = time.monotonic() - start
    if result.returncode == 0:
        return "survived", seconds, ""
    failed = [
        line.split(" ")[1] for line in result.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))
    ]
    return "killed", seconds, failed[0] if failed else f"(pytest exit {result.returncode})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", nargs="*", choices=["delivery", "extract", "quality"], help="files to mutate"
    )
    parser.add_argument(
        "--timeout", type=float, default=180, help="seconds per mutant's tests (a timeout kills)"
    )
    parser.add_argument("--all", action="store_true", help="also flip ==, is and in (about 100 more)")
    parser.add_argument("--named", action="store_true", help="only the four mutants issue #16 named")
    args = parser.parse_args(argv)
    paths = [p for p in TARGETS if not args.only or Path(p).stem in args.only]

    mutants = [m for m in named_mutants() if m.path in paths]
    seen = {ast.dump(ast.parse(m.source)) for m in mutants}  # the same code, whatever its layout
    for path in [] if args.named else paths:
        original = (ROOT / path).read_text()
        seen.add(ast.dump(ast.parse(original)))
        for mutant in generic_mutants(path, original, negations=args.all):
            key = ast.dump(ast.parse(mutant.source))
            if key not in seen:
                seen.add(key)
                mutants.append(mutant)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="retention-mutants-") as tmp:
        copy = _copy_tree(Path(tmp))
        env = _environment(copy)
        print(f"{len(mutants)} mutants of {', '.join(paths)}; tests run against a copy in {copy}", flush=True)
        baseline = {}
        for path in paths:
            outcome, seconds, killer = _run_tests(copy, env, TARGETS[path], args.timeout)
            if outcome != "survived":
                raise SystemExit(f"scripts/mutate.py: the unmutated tests for {path} fail: {killer}")
            baseline[path] = seconds
        for n, mutant in enumerate(mutants, 1):
            target = copy / mutant.path
            original = target.read_text()
            target.write_text(mutant.source)
            try:
                mutant.outcome, mutant.seconds, mutant.killer = _run_tests(
                    copy, env, TARGETS[mutant.path], args.timeout
                )
            finally:
                target.write_text(original)
            mark = "named " if mutant.named else ""
            print(
                f"[{n:3}/{len(mutants)}] {mutant.outcome:8} {mutant.seconds:5.1f} s  "
                f"{mark}{mutant.path}:{mutant.line}  {mutant.change}  {mutant.killer}",
                flush=True,
            )

    elapsed = time.monotonic() - started
    named = [m for m in mutants if m.named]
    survivors = [m for m in mutants if m.outcome == "survived"]
    killed = len(mutants) - len(survivors)
    print()
    print(f"named mutants (issue #16): {sum(m.outcome != 'survived' for m in named)} of {len(named)} killed")
    for m in named:
        print(f"  {m.outcome:8} {m.path}:{m.line}  {m.change}  {m.killer}")
    print(f"all mutants: {len(mutants)}, killed {killed}, survived {len(survivors)} ({elapsed / 60:.1f} min)")
    for m in survivors:
        print(f"  survived  {m.path}:{m.line}  {m.change}")
    return 0 if all(m.outcome != "survived" for m in named) else 1


if __name__ == "__main__":
    sys.exit(main())
