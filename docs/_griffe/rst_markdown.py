"""Griffe extension: read the library's numpydoc docstrings (reST inside) as Markdown.

The docstrings are numpydoc, so their prose is reStructuredText: ``:class:`~a.B``` roles,
``text::`` literal blocks, simple tables, definition lists and bare ``>>>`` doctest runs.
mkdocstrings renders docstring text as Markdown, so after Griffe has parsed each docstring
into numpydoc sections this extension rewrites the prose of every section:

- a role becomes an autorefs link (``[`B`][a.B]``) when its target is an object of the
  documented package, resolved from the docstring's scope as Python would (names of the
  object, its parents and its module, then the module's imports); a target outside the
  package (``numpy.sort``, ``fnmatch``) becomes inline code. A target that looks like ours
  but resolves to nothing is reported as a warning, so ``mkdocs build --strict`` fails
  on a stale reference instead of printing a dead link;
- ``text::`` + an indented block becomes ``text:`` + a fenced code block;
- a simple table (``====  ====``) becomes a Markdown table;
- a definition list (a term, then lines indented by four) becomes a Markdown
  definition list (the ``def_list`` extension);
- a run of ``>>>`` lines outside an Examples section becomes a ``pycon`` block.

And, so that every name of a module's ``__all__`` is documented once:

- a module attribute's ``#:`` comment (Sphinx's doc comment) becomes its docstring;
- a class that builds its docstring (``__doc__ = f"..."``) gets it by importing it;
- attributes of a class without a docstring of their own (stored constructor
  arguments, dataclass fields) are not listed again under the class: its Parameters
  and Attributes sections document them.

Options (``mkdocs.yml``): ``package`` (default ``shrinkage``) and ``known_problems``,
objects whose docstring problems (parse warnings, stale references) are logged as info
rather than failing the strict build, until the source is fixed.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from functools import cached_property
from typing import Any

import griffe

logger = griffe.get_logger("rst_markdown")

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|type):`(?P<text>[^`]+)`")
_TABLE_BORDER = re.compile(r"^ *=+( +=+)+ *$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


class RstMarkdown(griffe.Extension):
    """Rewrite reST in parsed numpydoc sections as Markdown (see the module docstring)."""

    def __init__(
        self,
        package: str = "shrinkage",
        known_problems: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.package = package
        self.known_problems = set(known_problems or ())
        self.loader: griffe.GriffeLoader | None = None

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.path != self.package:
            return
        self.loader = loader
        # Convert when a docstring is first parsed (while rendering), not now: other
        # extensions (dataclasses' __init__) must have run, and private objects that
        # are never rendered are never parsed.
        for obj in _objects(pkg):
            if obj.is_class and "__doc__" in obj.members:
                _runtime_doc(obj)
            if obj.docstring is None and obj.is_attribute and obj.parent is not None:
                if obj.parent.is_module:
                    _doc_comment(obj)
                else:  # a constructor argument stored or a dataclass field: documented
                    obj.public = False  # in the class's Parameters / Attributes, not again
            if obj.docstring is not None:
                obj.docstring.__class__ = _MarkdownDocstring
                obj.docstring.rst_markdown = self

    # sections ------------------------------------------------------------------------

    def convert(self, sections: list[Any], obj: griffe.Object) -> list[Any]:
        for section in sections:
            self._section(section, obj)
        return sections

    def _section(self, section: Any, obj: griffe.Object) -> None:
        kind = section.kind
        if kind is griffe.DocstringSectionKind.text:
            section.value = self._prose(section.value, obj)
        elif kind is griffe.DocstringSectionKind.examples:
            section.value = [
                (k, self._prose(text, obj) if k is griffe.DocstringSectionKind.text else text)
                for k, text in section.value
            ]
        elif kind is griffe.DocstringSectionKind.admonition:
            section.value.description = self._prose(section.value.description, obj)
        elif isinstance(section.value, list):  # parameters, returns, raises, attributes, ...
            for item in section.value:
                if isinstance(getattr(item, "description", None), str):
                    item.description = self._prose(item.description, obj)

    def _prose(self, text: str, obj: griffe.Object) -> str:
        text = _doctest_runs(_definition_lists(_tables(_literal_blocks(text))))
        return _outside_fences(text, lambda part: _ROLE.sub(lambda m: self._role(m, obj), part))

    # roles ---------------------------------------------------------------------------

    def _role(self, match: re.Match[str], obj: griffe.Object) -> str:
        text = match["text"].strip()
        if "<" in text and text.endswith(">"):  # :func:`title <target>`
            title, target = text[:-1].split("<", 1)
            title, target = title.strip(), target.strip()
        else:
            target = text.lstrip("~").lstrip(".")
            title = target.rsplit(".", 1)[-1] if text.startswith("~") else target
        path = self._resolve(target, obj)
        if path is not None:
            return f"[`{title}`][{path}]"
        if target.split(".")[0] == self.package or self._local(target, obj):
            log = logger.info if _known(obj, self.known_problems) else logger.warning
            log("%s: reference %s points to nothing in %s", obj.path, match.group(0), self.package)
        return f"`{title}`"

    def _local(self, target: str, obj: griffe.Object) -> bool:
        """A relative name not found: ours if it is not an import of the module."""
        module = obj if obj.is_module else obj.module
        first = target.split(".")[0]
        return first not in module.imports and first not in {"numpy", "torch", "sklearn", "scipy", "pandas"}

    def _resolve(self, target: str, obj: griffe.Object) -> str | None:
        candidates = []
        if target.split(".")[0] == self.package:
            candidates.append(target)
        else:
            scope: griffe.Object | None = obj
            while scope is not None:
                candidates.append(f"{scope.path}.{target}")
                scope = scope.parent
            module = obj if obj.is_module else obj.module
            first, _, rest = target.partition(".")
            if first in module.imports:
                imported = module.imports[first]
                candidates.append(f"{imported}.{rest}" if rest else imported)
        for path in candidates:
            found = _lookup(path, self.loader)
            if found is not None:
                return found
        return None


class _MarkdownDocstring(griffe.Docstring):
    """A docstring whose parsed sections are rewritten as Markdown, once, when first read."""

    rst_markdown: RstMarkdown

    @cached_property
    def parsed(self) -> list[Any]:
        extension = self.rst_markdown
        obj = self.parent
        if obj is None or not _known(obj, extension.known_problems):
            return extension.convert(self.parse(), obj)
        # a known problem of the source's docstring: its parse warnings become info
        griffe_logger = _underlying(griffe.logger)
        demote = _Demote(obj.path)
        griffe_logger.addFilter(demote)
        try:
            return extension.convert(self.parse(), obj)
        finally:
            griffe_logger.removeFilter(demote)


class _Demote(logging.Filter):
    """Turn warnings into info records (with the object named) for a known problem."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"known docstring problem in {self.path} (listed in mkdocs.yml): {record.msg}"
        return True


def _underlying(log: Any) -> logging.Logger:
    """The standard logger under Griffe's wrapper (and mkdocstrings' adapter)."""
    while not isinstance(log, logging.Logger):
        log = getattr(log, "_logger", None) or log.logger
    return log


def _known(obj: griffe.Object, known: set[str]) -> bool:
    return obj.path in known


def _lookup(path: str, loader: griffe.GriffeLoader) -> str | None:
    """The canonical path of ``path`` if it names a loaded object of the package."""
    try:
        found = loader.modules_collection.get_member(path)
    except (KeyError, ValueError, IndexError):
        return None
    try:
        return found.final_target.path if found.is_alias else found.path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _runtime_doc(cls: griffe.Object) -> None:
    """A class that builds its docstring (``__doc__ = f\"\"\"...\"\"\"``): read it at run time."""
    try:
        runtime = getattr(importlib.import_module(cls.module.path), cls.name).__doc__
    except Exception as error:  # reported: the build fails in strict mode
        logger.warning("%s: cannot import it to read its docstring: %s", cls.path, error)
        return
    member = cls.members["__doc__"]
    del cls.members["__doc__"]
    cls.docstring = griffe.Docstring(
        inspect.cleandoc(runtime),
        lineno=member.lineno,
        endlineno=member.endlineno,
        parent=cls,
        parser=cls.module.docstring.parser,
        parser_options=cls.module.docstring.parser_options,
    )


def _doc_comment(attr: griffe.Object) -> None:
    """A module attribute's ``#:`` comment lines (Sphinx's doc comments) as its docstring."""
    lines = attr.parent.lines if attr.lineno else []
    comment: list[str] = []
    index = attr.lineno - 2  # the line above the assignment (lines are 1-based)
    while 0 <= index < len(lines) and lines[index].lstrip().startswith("#:"):
        comment.insert(0, lines[index].lstrip()[2:].strip())
        index -= 1
    if comment:
        attr.docstring = griffe.Docstring(
            "\n".join(comment),
            lineno=index + 2,
            endlineno=attr.lineno - 1,
            parent=attr,
            parser=attr.parent.docstring.parser if attr.parent.docstring else None,
            parser_options=attr.parent.docstring.parser_options if attr.parent.docstring else None,
        )


def _objects(module: griffe.Object):
    """Every object defined under ``module`` (aliases skipped: their target is elsewhere)."""
    yield module
    for member in module.members.values():
        if member.is_alias:
            continue
        yield from _objects(member)


# reST blocks → Markdown ----------------------------------------------------------------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _outside_fences(text: str, transform) -> str:
    """Apply ``transform`` to the parts of ``text`` outside fenced code blocks."""
    parts = re.split(r"(^```.*?^```[ \t]*$)", text, flags=re.MULTILINE | re.DOTALL)
    return "".join(part if i % 2 else transform(part) for i, part in enumerate(parts))


def _literal_blocks(text: str) -> str:
    """``text::`` + blank line + indented block → ``text:`` + a fenced block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and i + 1 < len(lines):
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            k = j
            while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > base):
                k += 1
            while k > j and not lines[k - 1].strip():
                k -= 1
            if k > j:
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(head + ":")
                    out.append("")
                block = lines[j:k]
                cut = min(_indent(b) for b in block if b.strip())
                pad = " " * base
                out.append(pad + "```text")
                out.extend(pad + b[cut:] if b.strip() else "" for b in block)
                out.append(pad + "```")
                i = k
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _cell(text: str) -> str:
    """A table cell: pipes outside code spans escaped."""
    parts = _CODE_SPAN.split(text)
    out, i = [], 0
    # _CODE_SPAN.split yields: plain, ticks, code, plain, ticks, code, ...
    while i < len(parts):
        out.append(parts[i].replace("|", "\\|"))
        if i + 2 < len(parts):
            out.append(parts[i + 1] + parts[i + 2] + parts[i + 1])
        i += 3
    return "".join(out).strip()


def _tables(text: str) -> str:
    """reST simple tables → Markdown tables (a definition list for two headerless columns)."""

    def convert(part: str) -> str:
        lines = part.split("\n")
        out: list[str] = []
        i = 0
        while i < len(lines):
            if not _TABLE_BORDER.match(lines[i]):
                out.append(lines[i])
                i += 1
                continue
            border = lines[i]
            spans = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]
            end = i + 1
            borders = [i]
            while end < len(lines) and (lines[end].strip() or len(borders) < 2):
                if lines[end].strip() == border.strip():
                    borders.append(end)
                end += 1
            last = borders[-1]
            rows: list[list[str]] = []
            for line in lines[i + 1 : last]:
                if line.strip() == border.strip():
                    continue
                cells = [
                    line[a : (spans[n + 1][0] if n + 1 < len(spans) else len(line))] for n, (a, _) in enumerate(spans)
                ]
                cells = [c.strip() for c in cells]
                if rows and not cells[0]:  # continuation of the previous row
                    rows[-1] = [f"{p} {c}".strip() for p, c in zip(rows[-1], cells)]
                else:
                    rows.append(cells)
            pad = " " * _indent(border)
            if len(borders) < 3 and len(spans) == 2:  # no header: a term and its meaning
                for term, meaning in rows:
                    out.extend([pad + term, pad + ":   " + meaning, ""])
                i = last + 1
                continue
            header = rows[0] if len(borders) >= 3 else [""] * len(spans)
            body = rows[1:] if len(borders) >= 3 else rows
            out.append(pad + "| " + " | ".join(_cell(c) for c in header) + " |")
            out.append(pad + "|" + "|".join("---" for _ in spans) + "|")
            out.extend(pad + "| " + " | ".join(_cell(c) for c in row) + " |" for row in body)
            i = last + 1
        return "\n".join(out)

    return _outside_fences(text, convert)


def _definition_lists(text: str) -> str:
    """``term`` + lines indented by four → ``term`` + ``:   definition`` (def_list)."""

    def convert(part: str) -> str:
        lines = part.split("\n")
        out: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            term_ok = (
                line.strip()
                and not line.lstrip().startswith(("- ", "* ", "|", ">>>"))
                and (i == 0 or not lines[i - 1].strip() or _is_definition_end(lines, i))
            )
            base = _indent(line)
            if term_ok and i + 1 < len(lines) and lines[i + 1].strip() and _indent(lines[i + 1]) >= base + 4:
                out.append(line)
                j = i + 1
                first = True
                while j < len(lines) and lines[j].strip() and _indent(lines[j]) >= base + 4:
                    body = lines[j][base + 4 :]
                    out.append(" " * base + (":   " if first else "    ") + body)
                    first = False
                    j += 1
                out.append("")
                i = j
                continue
            out.append(line)
            i += 1
        return "\n".join(out).replace("\n\n\n", "\n\n")

    return _outside_fences(text, convert)


def _is_definition_end(lines: list[str], i: int) -> bool:
    """Line ``i`` follows a definition (an indented line under a term)."""
    return _indent(lines[i - 1]) >= _indent(lines[i]) + 4


def _doctest_runs(text: str) -> str:
    """Bare ``>>>`` runs (with their output lines) → ``pycon`` fenced blocks."""

    def convert(part: str) -> str:
        lines = part.split("\n")
        out: list[str] = []
        i = 0
        while i < len(lines):
            if lines[i].lstrip().startswith(">>>"):
                pad = " " * _indent(lines[i])
                j = i
                while j < len(lines) and lines[j].strip():
                    j += 1
                out.append(pad + "```pycon")
                out.extend(lines[i:j])
                out.append(pad + "```")
                i = j
                continue
            out.append(lines[i])
            i += 1
        return "\n".join(out)

    return _outside_fences(text, convert)
