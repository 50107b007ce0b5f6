"""Check every template of every occasion in every language before a message goes out.

:func:`lint` renders each ``templates/<occasion>/<language>.jinja`` against the sample
contexts of :mod:`retention.samples` (and their variants, so both sides of
``{% if years == 1 %}`` run) and reports, with file and line where known:

- errors: syntax errors, undefined variables (also in branches the samples do not take:
  every name a template uses must be in its occasion's context), sandbox violations,
  what is provably unbounded (a file over the size limit, a recursive macro, a template
  that includes, imports or extends itself directly or through a cycle, a range over
  the sandbox's cap, nested loops over constant ranges that multiply past
  :data:`MAX_LOOP_ITERATIONS`), anything that breaks the render bounds when the samples
  are rendered (in the render worker, under the same budget as the night: a hang is
  "exceeded the render budget", with file and line where known), a Python object printed
  into a message,
  a template that does not extend ``_layout.jinja``, a missing or empty subject, text or
  html block, a subject over 78 characters or with CR/LF/control characters, a rendered
  text or HTML part without the unsubscribe link, an occasion without any template, an
  occasion folder no occasion uses;
- warnings: a language missing for an occasion (its customers get the fallback), a
  template for a language the pipeline does not know, a category without a name in a
  language.

:func:`preview` renders one occasion in one language to an HTML and a text file.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2 import meta, nodes

from retention import registry
from retention.registry import Occasion
from retention.render import (
    LAYOUT,
    PARTS,
    VARIANTS,
    Draft,
    Renderer,
    RenderLimits,
    RenderPool,
    TemplateProblem,
    _bounded_binop,
    _LimitExceeded,
    _worker_renderer,
    template_language,
)
from retention.samples import sample_context, sample_contexts
from retention.settings import LANGUAGES

__all__ = ["MAX_LOOP_ITERATIONS", "MAX_SUBJECT", "Problem", "lint", "preview", "template_files", "verdict"]

#: Nested loops over constant ranges that together run more often than this are refused:
#: a message needs a few dozen iterations, not millions (and each costs render time).
MAX_LOOP_ITERATIONS = 1_000_000
#: The sandbox's cap on one range() (jinja2.sandbox.MAX_RANGE).
MAX_RANGE = 100_000

#: RFC 5322's recommended line length; longer subjects are cut off in most inboxes anyway.
MAX_SUBJECT = 78
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
# Names the renderer adds to every context (besides the caller's), and the layout's switch.
_RENDERER_NAMES = frozenset({"language", "strings", "part"})


@dataclass(frozen=True)
class Problem:
    """One finding of the linter; ``str()`` gives ``file:line: message``."""

    file: str
    line: int | None
    message: str
    severity: str = "error"  # "error" blocks the occasion; "warning" only informs
    occasion: str | None = None
    language: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        prefix = "" if self.is_error else "warning: "
        return f"{where}: {prefix}{self.message}"


def _is_variant(stem: str) -> bool:
    """``en.b``: variant b of the en template (``retention.render.VARIANTS``)."""
    language, _, variant = stem.partition(".")
    return language in LANGUAGES and variant in VARIANTS[1:]


def template_files(
    templates_dir: Path, occasions: Mapping[str, Occasion] | None = None
) -> list[tuple[str, str]]:
    """(occasion, language) of every ``<occasion>/<language>.jinja`` file of a known occasion
    (``occasions``: the registry of the environment by default); a variant
    ``<language>.b.jinja`` is listed with the language ``<language>.b``."""
    root = Path(templates_dir)
    return [
        (occasion, path.stem)
        for occasion in (registry.occasions() if occasions is None else occasions)
        if (root / occasion).is_dir()
        for path in sorted((root / occasion).glob("*.jinja"))
        if path.stem in LANGUAGES or _is_variant(path.stem)
    ]


def lint(
    templates_dir: Path,
    default_language: str = "en",
    shop_name: str = "Nordlicht Shop",
    shop_url: str = "https://shop.example.com",
    limits: RenderLimits | None = None,
    occasions: Mapping[str, Occasion] | None = None,
) -> list[Problem]:
    """Every problem of every template, errors and warnings, each reported once.

    Each template's samples render in the render worker under ``limits`` (the night's
    bounds), one template per task: a template that hangs, recurses or blows its memory
    is reported and the next one is still checked. ``occasions``: the occasions whose
    folders ``templates_dir`` holds (:func:`retention.registry.occasions`; default: the
    environment's).
    """
    root = Path(templates_dir)
    limits = limits or RenderLimits()
    occasions = registry.occasions() if occasions is None else occasions
    if not root.is_dir():
        return [Problem(str(root), None, "no such templates folder")]
    problems = _check_folders(root, default_language, occasions) + _check_sizes(root, limits)
    try:
        renderer = Renderer(root, default_language, limits)
    except TemplateProblem as problem:
        return [*problems, _from_template_problem(root, problem)]
    problems += _check_categories(root, renderer) + _check_cycles(root, renderer, occasions)
    with RenderPool(root, default_language, limits) as pool:
        for occasion, language in template_files(root, occasions):
            spoken = template_language(f"{occasion}/{language}.jinja")
            contexts = sample_contexts(occasion, spoken, shop_name, shop_url, occasions=occasions)
            problems += _lint_template(renderer, pool, occasion, language, contexts)
    return list(dict.fromkeys(problems))


def verdict(
    problems: list[Problem], pairs: list[tuple[str, str]], root: Path | None = None
) -> dict[str, str]:
    """Which ``occasion/language`` a lint blocks, and why (its first error, with file paths
    relative to ``root`` when given: ``thank_you/en.jinja:4: ...``).

    An error of one template blocks that occasion in that language; an error that belongs
    to no one template (the layout, a strings file) blocks every pair. Warnings block
    nothing. The nightly render and the ``retention_templates`` DAG both use this.
    """
    errors = [problem for problem in problems if problem.is_error]
    everyone = next((problem for problem in errors if problem.occasion is None), None)
    blocked = {}
    for occasion, language in pairs:
        own = next((p for p in errors if (p.occasion, p.language) == (occasion, language)), None)
        if own or everyone:
            blocked[f"{occasion}/{language}"] = _relative(own or everyone, root)
    return blocked


def _relative(problem: Problem, root: Path | None) -> str:
    if root is None or not Path(problem.file).is_relative_to(root):
        return str(problem)
    file = Path(problem.file).relative_to(root).as_posix()
    return str(Problem(file, problem.line, problem.message, problem.severity))


def preview(
    templates_dir: Path,
    occasion: str,
    language: str,
    out_dir: Path,
    context: dict | None = None,
    default_language: str = "en",
    limits: RenderLimits | None = None,
    variant: str = "a",
) -> tuple[str, Path, Path]:
    """Render one message (sample context unless given) to ``OCCASION-LANG.html`` and ``.txt``.

    Returns the subject and the two paths. The language falls back as in a real night.
    The message renders in the render worker, under the night's bounds (``limits``); with
    ``variant`` ``b``, the template's ``<language>.b.jinja`` (``ValueError`` if it has none).
    """
    renderer = Renderer(Path(templates_dir), default_language, limits)
    name = renderer.variant_name(renderer.template_name(occasion, language), variant)
    if name is None:
        raise ValueError(f"{occasion}/{language} has no variant {variant}")
    with RenderPool(Path(templates_dir), default_language, limits) as pool:
        [message] = pool.render(name, [context or sample_context(occasion, language)])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, text_path = out / f"{occasion}-{language}.html", out / f"{occasion}-{language}.txt"
    html_path.write_text(message.html, encoding="utf-8")
    text_path.write_text(f"Subject: {message.subject}\n\n{message.text}", encoding="utf-8")
    return message.subject, html_path, text_path


# --------------------------------------------------------------------------- the folder


def _check_folders(root: Path, default_language: str, occasions: Mapping[str, Occasion]) -> list[Problem]:
    """Occasion folders: unknown ones, missing ones, missing and unknown languages."""
    problems = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        if folder.name not in occasions:
            problems.append(
                Problem(
                    str(folder),
                    None,
                    f"unknown occasion folder {folder.name!r}: no message uses it "
                    f"(occasions: {', '.join(occasions)})",
                )
            )
    for occasion in occasions:
        problems += _check_languages(root, occasion, default_language)
    return problems


def _check_languages(root: Path, occasion: str, default_language: str) -> list[Problem]:
    folder = root / occasion
    present = {p.stem for p in folder.glob("*.jinja")} if folder.is_dir() else set()
    if not present & set(LANGUAGES):
        return [
            Problem(
                str(folder),
                None,
                "no template for this occasion: its messages cannot be rendered",
                occasion=occasion,
            )
        ]
    fallback = next((lang for lang in (default_language, "en") if lang in present), None)
    problems = []
    if fallback is None:
        problems.append(
            Problem(
                str(folder),
                None,
                f"no template in the default language ({default_language}) or en: "
                "customers of a missing language get no message",
                occasion=occasion,
            )
        )
    for language in LANGUAGES:
        if language not in present and fallback:
            problems.append(
                Problem(
                    str(folder / f"{language}.jinja"),
                    None,
                    f"missing language: {language} customers get the {fallback} template",
                    "warning",
                    occasion,
                    language,
                )
            )
    for stem in sorted(s for s in present if _is_variant(s) and s.partition(".")[0] not in present):
        problems.append(
            Problem(
                str(folder / f"{stem}.jinja"),
                None,
                f"variant without its {stem.partition('.')[0]}.jinja: it is never used",
                "warning",
                occasion,
            )
        )
    for stem in sorted(s for s in present - set(LANGUAGES) if not _is_variant(s)):
        problems.append(
            Problem(
                str(folder / f"{stem}.jinja"),
                None,
                f"{stem!r} is not one of the languages ({', '.join(LANGUAGES)}): this template is never used",
                "warning",
                occasion,
            )
        )
    return problems


def _check_categories(root: Path, renderer: Renderer) -> list[Problem]:
    """Category names every language has, compared with the en list."""
    if not renderer.categories:
        return []
    keys = set(renderer.categories.get("en", {}))
    problems = []
    for language in LANGUAGES:
        missing = sorted(keys - set(renderer.categories.get(language, {})))
        if missing:
            problems.append(
                Problem(
                    str(root / "_categories.toml"),
                    None,
                    f"[{language}] has no name for {', '.join(missing)}: the raw name is shown",
                    "warning",
                    language=language,
                )
            )
    return problems


# --------------------------------------------------------------------------- one template


def _lint_template(
    renderer: Renderer, pool: RenderPool, occasion: str, language: str, contexts: list[dict]
) -> list[Problem]:
    """All problems of one template file, rendered with its sample ``contexts``."""
    root = renderer.templates
    name = f"{occasion}/{language}.jinja"
    here = str(root / name)
    if (root / name).stat().st_size > renderer.limits.template_max_bytes:
        return []  # reported by _check_sizes; parsing it is what the limit prevents
    env = renderer.environment(False)
    try:
        source, filename, _ = env.loader.get_source(env, name)
        tree = env.parse(source, name, filename)
    except jinja2.TemplateSyntaxError as exc:
        return [
            Problem(here, exc.lineno, f"syntax error: {exc.message}", occasion=occasion, language=language)
        ]
    allowed = _RENDERER_NAMES | renderer.full_context(template_language(name), contexts[0]).keys()
    problems = _check_structure(tree, here) + _check_names(tree, here, allowed)
    problems += _check_macros(tree, here) + _check_loops(tree, here)
    args = (str(root), renderer.default_language, renderer.limits, occasion, language, contexts)
    try:
        # draft, three blocks and the full render per sample context
        problems += pool.run(_render_checks, args, renders=len(contexts) * 5, name=name)
    except TemplateProblem as problem:  # the worker was stopped or died
        problems.append(_from_template_problem(root, problem))
    # A problem in the layout is every template's problem: reported once, for no one occasion.
    return [
        Problem(p.file, p.line, p.message, p.severity, occasion, language) if p.file == here else p
        for p in dict.fromkeys(problems)
    ]


def _render_checks(
    templates: str,
    default_language: str,
    limits: RenderLimits,
    occasion: str,
    language: str,
    contexts: list[dict],
) -> list[Problem]:
    """Worker side: render the sample ``contexts`` of one template and check what comes out."""
    root = Path(templates)
    renderer = _worker_renderer(templates, default_language, limits)
    name = f"{occasion}/{language}.jinja"
    here = str(root / name)
    env = renderer.environment(False)
    source, filename, _ = env.loader.get_source(env, name)
    tree = env.parse(source, name, filename)
    problems: list[Problem] = []
    for context in contexts:
        try:
            draft = renderer.draft(name, context)
            problems += _check_draft(renderer, draft, context, tree, here)
            renderer.render_template(name, context)
        except TemplateProblem as problem:
            problems.append(_from_template_problem(root, problem))
            break  # the next variant would fail the same way
        except Exception as exc:  # noqa: BLE001 (e.g. MemoryError outside template code)
            problems.append(Problem(here, None, f"{type(exc).__name__}: {exc}"))
            break
    return problems


# --------------------------------------------------------------------------- unbounded


def _check_sizes(root: Path, limits: RenderLimits) -> list[Problem]:
    """Every template file (occasions, the layout, partials) within the size limit."""
    problems = []
    for path in sorted(root.rglob("*.jinja")):
        size = path.stat().st_size
        if size > limits.template_max_bytes:
            problems.append(
                Problem(
                    str(path),
                    None,
                    f"the file is {size} bytes, over the limit of {limits.template_max_bytes} bytes "
                    "(RETENTION_TEMPLATE_MAX_BYTES)",
                )
            )
    return problems


def _references(tree: nodes.Template) -> list[tuple[str, int]]:
    """The templates a tree extends, includes or imports by constant name, with the line."""
    found = []
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        target = node.template
        names = target.items if isinstance(target, (nodes.List, nodes.Tuple)) else [target]
        found += [
            (n.value, node.lineno) for n in names if isinstance(n, nodes.Const) and isinstance(n.value, str)
        ]
    return found


def _check_cycles(root: Path, renderer: Renderer, occasions: Mapping[str, Occasion]) -> list[Problem]:
    """A template that extends, includes or imports itself, directly or through others, never ends."""
    env = renderer.environment(False)
    graph: dict[str, list[tuple[str, int]]] = {}
    for path in sorted(root.rglob("*.jinja")):
        name = path.relative_to(root).as_posix()
        if path.stat().st_size > renderer.limits.template_max_bytes:
            continue
        try:
            graph[name] = _references(env.parse(path.read_text(encoding="utf-8"), name, str(path)))
        except (jinja2.TemplateSyntaxError, UnicodeDecodeError, OSError):
            continue  # reported where the file is linted
    problems = []
    for name in graph:
        cycle = _cycle_from(name, graph)
        if cycle:
            chain = " -> ".join(step for step, _ in cycle) + f" -> {name}"
            folder, _, stem = name.rpartition("/")
            stem = stem.removesuffix(".jinja")
            known = folder in occasions and (stem in LANGUAGES or _is_variant(stem))
            problems.append(
                Problem(
                    str(root / name),
                    cycle[0][1],
                    f"includes, imports or extends itself ({chain}): rendering it would never end",
                    occasion=folder if known else None,
                    language=stem if known else None,
                )
            )
    return problems


def _cycle_from(start: str, graph: dict[str, list[tuple[str, int]]]) -> list[tuple[str, int]] | None:
    """The path (template, line of its reference) from ``start`` back to itself, if any."""
    seen: set[str] = set()
    stack = [(target, [(start, line)]) for target, line in graph.get(start, [])]
    while stack:
        node, path = stack.pop()
        if node == start:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack += [(target, [*path, (node, line)]) for target, line in graph.get(node, [])]
    return None


def _check_macros(tree: nodes.Template, here: str) -> list[Problem]:
    """A macro that calls itself, directly or through other macros of the file: recursion."""
    macros = {macro.name: macro for macro in tree.find_all(nodes.Macro)}
    calls = {
        name: {
            call.node.name
            for call in macro.find_all(nodes.Call)
            if isinstance(call.node, nodes.Name) and call.node.name in macros
        }
        for name, macro in macros.items()
    }
    problems = []
    for name, macro in macros.items():
        reached, todo = set(), list(calls[name])
        while todo:
            callee = todo.pop()
            if callee not in reached:
                reached.add(callee)
                todo += calls[callee]
        if name in reached:
            problems.append(
                Problem(
                    here,
                    macro.lineno,
                    f"macro {name!r} calls itself (directly or through other macros): "
                    "recursion is not allowed in a message template",
                )
            )
    return problems


def _check_loops(tree: nodes.Template, here: str) -> list[Problem]:
    """Loops over constant ranges: one over the sandbox's cap, or nested ones that multiply past the cap."""
    problems: list[Problem] = []

    def walk(node: nodes.Node, runs: int) -> None:
        for child in node.iter_child_nodes():
            if isinstance(child, nodes.For):
                size = _range_size(child.iter)
                if size is not None and (size > MAX_RANGE or runs * size > MAX_LOOP_ITERATIONS):
                    problems.append(
                        Problem(
                            here,
                            child.lineno,
                            f"this loop runs {runs * size:,} times (range of {size:,}"
                            + (f" inside loops running {runs:,} times" if runs > 1 else "")
                            + f"): at most {MAX_RANGE:,} per range and {MAX_LOOP_ITERATIONS:,} in all",
                        )
                    )
                    continue
                walk(child, runs * (size or 1))
            else:
                walk(child, runs)

    walk(tree, 1)
    return problems


def _range_size(node: nodes.Node) -> int | None:
    """The length of ``range(<constants>)``, or None when it is not a constant range."""
    if not (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "range"):
        return None
    if node.kwargs or node.dyn_args or node.dyn_kwargs or not 1 <= len(node.args) <= 3:
        return None
    try:
        values = [_const_int(arg) for arg in node.args]
    except _LimitExceeded:
        return 10**18  # a bound too large to compute is unbounded
    if any(v is None for v in values):
        return None
    try:
        return len(range(*values))
    except (ValueError, OverflowError):
        return 10**18 if values[-1] != 0 else None


_BIN = {nodes.Add: "+", nodes.Sub: "-", nodes.Mul: "*", nodes.Pow: "**", nodes.FloorDiv: "//", nodes.Mod: "%"}


def _const_int(node: nodes.Node) -> int | None:
    """An integer constant expression, evaluated under the sandbox's bounds (no ``9 ** 9 ** 9`` here)."""
    if isinstance(node, nodes.Const):
        return node.value if isinstance(node.value, int) and not isinstance(node.value, bool) else None
    if isinstance(node, nodes.Neg):
        value = _const_int(node.node)
        return None if value is None else -value
    operator = _BIN.get(type(node))
    if operator is None:
        return None
    left, right = _const_int(node.left), _const_int(node.right)
    if left is None or right is None:
        return None
    _bounded_binop(operator, left, right, MAX_LOOP_ITERATIONS)
    try:
        result = {
            "+": int.__add__,
            "-": int.__sub__,
            "*": int.__mul__,
            "**": pow,
            "//": int.__floordiv__,
            "%": int.__mod__,
        }[operator](left, right)
    except ZeroDivisionError:
        return None
    return result if isinstance(result, int) else None


def _check_structure(tree: nodes.Template, here: str) -> list[Problem]:
    """Extends the layout (which carries the unsubscribe link) and fills every part's block."""
    problems = []
    extends = [e for e in tree.find_all(nodes.Extends) if isinstance(e.template, nodes.Const)]
    if not any(e.template.value == LAYOUT for e in extends):
        problems.append(
            Problem(
                here,
                extends[0].lineno if extends else 1,
                f'does not extend "{LAYOUT}": start the file with {{% extends "{LAYOUT}" %}} '
                "(the layout carries the unsubscribe link)",
            )
        )
    blocks = {block.name for block in tree.find_all(nodes.Block)}
    for part in PARTS:
        if part not in blocks:
            problems.append(Problem(here, None, f"missing part: no {{% block {part} %}}"))
    return problems


def _check_names(tree: nodes.Template, here: str, allowed: set[str]) -> list[Problem]:
    """Every variable the template reads must be in its occasion's context, taken branch or not."""
    problems = []
    for unknown in sorted(meta.find_undeclared_variables(tree) - allowed):
        line = next((n.lineno for n in tree.find_all(nodes.Name) if n.name == unknown), None)
        problems.append(
            Problem(
                here,
                line,
                f"undefined variable {unknown!r}: not in this occasion's context "
                f"(available: {', '.join(sorted(allowed - {'part'}))})",
            )
        )
    return problems


def _check_draft(
    renderer: Renderer, draft: Draft, context: dict, tree: nodes.Template, here: str
) -> list[Problem]:
    """Subject rules, empty parts and the unsubscribe link, on one rendered sample."""
    lines = {block.name: block.lineno for block in tree.find_all(nodes.Block)}
    problems = []
    subject = draft.subject.strip()
    if _CONTROL.search(subject):
        problems.append(
            Problem(
                here, lines.get("subject"), f"CR/LF or another control character in the subject: {subject!r}"
            )
        )
    if len(subject) > MAX_SUBJECT:
        problems.append(
            Problem(
                here,
                lines.get("subject"),
                f"subject is {len(subject)} characters, at most {MAX_SUBJECT}: {subject!r}",
            )
        )
    for part in PARTS:
        if part in lines and not renderer.render_block(draft.name, part, context, part == "html").strip():
            problems.append(Problem(here, lines[part], f"missing part: the {part} block renders empty"))
    url = context["unsubscribe_url"]
    if url not in draft.text:
        problems.append(
            Problem(here, None, "missing unsubscribe link: the text part does not contain unsubscribe_url")
        )
    if url not in draft.html and html_lib.escape(url) not in draft.html:
        problems.append(
            Problem(here, None, "missing unsubscribe link: the HTML part does not contain unsubscribe_url")
        )
    return problems


def _from_template_problem(root: Path, problem: TemplateProblem) -> Problem:
    return Problem(str(root / problem.file) if problem.file else str(root), problem.line, problem.reason)
