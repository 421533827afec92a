"""Static files: an HTTP endpoint serving a directory (`App.static(prefix, directory)`)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from .exceptions import HTTPException
from .http import FileResponse, Response

__all__ = ["directory_endpoint"]


def directory_endpoint(root: str) -> Callable[[str], Awaitable[Response]]:
    """An endpoint `(path)` serving the files under the directory `root`; a directory serves
    its index.html; anything outside `root` or missing is 404. ValueError if `root` is not a
    directory."""
    root = os.path.realpath(root)
    if not os.path.isdir(root):
        raise ValueError(f"{root} is not a directory")

    async def serve_file(path: str = "") -> Response:
        target = os.path.realpath(os.path.join(root, path))
        if os.path.commonpath([root, target]) != root:
            raise HTTPException(404)
        if os.path.isdir(target):
            target = os.path.join(target, "index.html")
        if not os.path.isfile(target):
            raise HTTPException(404)
        return FileResponse(target)

    return serve_file
