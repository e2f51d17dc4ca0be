"""mkdocs hook: render the reST bits of riverbed's docstrings as mkdocstrings shows them.

Docstrings use Sphinx roles (``:class:`~riverbed.errors.StoreError```) and ``text::`` before
an example block. mkdocstrings renders them as Markdown, so the role name and the double
colon would show up as text; this hook turns the first into plain code and the second into
one colon.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|exc|data|obj):<code>(~?)([\w.]+)(\(\))?</code>")


def _role(match: re.Match[str]) -> str:
    short, name, call = match.group(1), match.group(2), match.group(3) or ""
    if short:
        name = name.rsplit(".", 1)[-1]
    return f"<code>{name}{call}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    html = _ROLE.sub(_role, html)
    return html.replace("::</p>", ":</p>")
