"""The jinja2 environment every generated text goes through, and the templates themselves.

One environment per template folder (``boot``, ``ci``, ``livepatch``,
``report``), all with ``StrictUndefined`` (a missing variable is an error,
never a blank).  HTML and XML templates are autoescaped: the names end in
``.j2``, so jinja2's usual ``select_autoescape`` by extension never saw
``report.html.j2`` as HTML, and mail subjects reached the page raw
(tests/unit/test_report.py::test_script_in_a_subject_is_escaped).  Shell
templates quote every outside value with the ``sh`` filter (``shlex.quote``).
"""

from __future__ import annotations

import functools
import shlex
from pathlib import Path
from typing import Any

import jinja2

ROOT = Path(__file__).resolve().parent
_ESCAPED = (".html.j2", ".xml.j2", ".html", ".xml", ".svg.j2")


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith(_ESCAPED)


def sh_quote(value: Any) -> str:
    """A value as one shell word (``shlex.quote`` of its text)."""
    return shlex.quote(str(value))


@functools.cache
def environment(folder: str) -> jinja2.Environment:
    """The environment for ``patchflow/templates/<folder>/``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROOT / folder)),
        undefined=jinja2.StrictUndefined,
        autoescape=_autoescape,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["sh"] = sh_quote
    return env


def render(folder: str, template: str, **ctx: Any) -> str:
    return environment(folder).get_template(template).render(**ctx)
