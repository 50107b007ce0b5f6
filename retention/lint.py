"""Check every template of every occasion in every language before a message goes out.

:func:`lint` renders each ``templates/<occasion>/<language>.jinja`` against the sample
contexts of :mod:`retention.samples` (and their variants, so both sides of
``{% if years == 1 %}`` run) and reports, with file and line where known:

- errors: syntax errors, undefined variables (also in branches the samples do not take:
  every name a template uses must be in its occasion's context), sandbox violations,
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
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2 import meta, nodes

from retention.render import LAYOUT, PARTS, Draft, Renderer, TemplateProblem
from retention.samples import OCCASIONS, sample_context, sample_contexts
from retention.settings import LANGUAGES

__all__ = ["MAX_SUBJECT", "Problem", "lint", "preview", "template_files"]

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


def template_files(templates_dir: Path) -> list[tuple[str, str]]:
    """(occasion, language) of every ``<occasion>/<language>.jinja`` file of a known occasion."""
    root = Path(templates_dir)
    return [
        (occasion, path.stem)
        for occasion in OCCASIONS
        if (root / occasion).is_dir()
        for path in sorted((root / occasion).glob("*.jinja"))
        if path.stem in LANGUAGES
    ]


def lint(
    templates_dir: Path,
    default_language: str = "en",
    shop_name: str = "Nordlicht Shop",
    shop_url: str = "https://shop.example.com",
) -> list[Problem]:
    """Every problem of every template, errors and warnings, each reported once."""
    root = Path(templates_dir)
    if not root.is_dir():
        return [Problem(str(root), None, "no such templates folder")]
    problems = _check_folders(root, default_language)
    try:
        renderer = Renderer(root, default_language)
    except TemplateProblem as problem:
        return [*problems, _from_template_problem(root, problem)]
    problems += _check_categories(root, renderer)
    for occasion, language in template_files(root):
        problems += _lint_template(renderer, occasion, language, shop_name, shop_url)
    return list(dict.fromkeys(problems))


def preview(
    templates_dir: Path,
    occasion: str,
    language: str,
    out_dir: Path,
    context: dict | None = None,
    default_language: str = "en",
) -> tuple[str, Path, Path]:
    """Render one message (sample context unless given) to ``OCCASION-LANG.html`` and ``.txt``.

    Returns the subject and the two paths. The language falls back as in a real night.
    """
    renderer = Renderer(Path(templates_dir), default_language)
    message = renderer.render(occasion, language, context or sample_context(occasion, language))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, text_path = out / f"{occasion}-{language}.html", out / f"{occasion}-{language}.txt"
    html_path.write_text(message.html, encoding="utf-8")
    text_path.write_text(f"Subject: {message.subject}\n\n{message.text}", encoding="utf-8")
    return message.subject, html_path, text_path


# --------------------------------------------------------------------------- the folder


def _check_folders(root: Path, default_language: str) -> list[Problem]:
    """Occasion folders: unknown ones, missing ones, missing and unknown languages."""
    problems = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        if folder.name not in OCCASIONS:
            problems.append(
                Problem(
                    str(folder),
                    None,
                    f"unknown occasion folder {folder.name!r}: no message uses it "
                    f"(occasions: {', '.join(OCCASIONS)})",
                )
            )
    for occasion in OCCASIONS:
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
    for stem in sorted(present - set(LANGUAGES)):
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
    renderer: Renderer, occasion: str, language: str, shop_name: str, shop_url: str
) -> list[Problem]:
    """All problems of one template file."""
    root = renderer.templates
    name = f"{occasion}/{language}.jinja"
    here = str(root / name)
    env = renderer.environment(False)
    try:
        source, filename, _ = env.loader.get_source(env, name)
        tree = env.parse(source, name, filename)
    except jinja2.TemplateSyntaxError as exc:
        return [
            Problem(here, exc.lineno, f"syntax error: {exc.message}", occasion=occasion, language=language)
        ]
    contexts = sample_contexts(occasion, language, shop_name, shop_url)
    allowed = _RENDERER_NAMES | renderer.full_context(language, contexts[0]).keys()
    problems = _check_structure(tree, here) + _check_names(tree, here, allowed)
    for context in contexts:
        try:
            draft = renderer.draft(name, context)
            problems += _check_draft(renderer, draft, context, tree, here)
            renderer.render_template(name, context)
        except TemplateProblem as problem:
            problems.append(_from_template_problem(root, problem))
            break  # the next variant would fail the same way
    # A problem in the layout is every template's problem: reported once, for no one occasion.
    return [
        Problem(p.file, p.line, p.message, p.severity, occasion, language) if p.file == here else p
        for p in dict.fromkeys(problems)
    ]


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
