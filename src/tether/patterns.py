"""The route pattern syntax every framework's users bring, in one regex.

`{id}`, `{id:int}` (Starlette/Robyn), `<id>`, `<int:id>` (Flask/Microdot/Panther) and
`:id` (Robyn/Express) name a path parameter. `parameters(path)` lists them and refuses a
pattern with an unbalanced `{`/`}` or `<`/`>`, naming the route.
"""

from __future__ import annotations

import re

__all__ = ["PARAMETER", "parameters"]

#: One path parameter: groups (brace name, brace converter, angle converter, angle name, colon name).
PARAMETER = re.compile(r"\{(\w+)(?::(\w+))?\}|<(?:(\w+):)?(\w+)>|(?<=/):(\w+)")


def parameters(path: str) -> list[tuple[str, str]]:
    """(name, converter) of each parameter in `path`, in order; ValueError for a pattern
    with a stray or unbalanced bracket (`/rooms/{room`)."""
    found = []
    literal = []
    last = 0
    for match in PARAMETER.finditer(path):
        brace_name, brace_conv, angle_conv, angle_name, colon_name = match.groups()
        found.append((brace_name or angle_name or colon_name, brace_conv or angle_conv or "str"))
        literal.append(path[last:match.start()])
        last = match.end()
    literal.append(path[last:])
    stray = sorted({char for part in literal for char in part if char in "{}<>"})
    if stray:
        raise ValueError(f"route {path!r}: unbalanced {' '.join(stray)} (a parameter is written "
                         "{name}, {name:int}, <name>, <int:name> or :name)")
    return found
