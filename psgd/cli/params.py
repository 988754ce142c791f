"""click parameter types shared by the commands: ``KEY=VALUE`` and layer sizes."""

from __future__ import annotations

from typing import Any

import click

from psgd.errors import ConfigError
from psgd.job import parse_param

__all__ = ["LayerSizes", "ParamType"]


class ParamType(click.ParamType):
    """``key=value`` for ``GlobalSettings.get_params``."""

    name = "KEY=VALUE"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_param(value)
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class LayerSizes(click.ParamType):
    """Comma-separated layer sizes, ``784,128,128,10``, or a model name kept as text:
    ``mlp:784,200,10``, ``cnn-mnist``, ``logreg``, ``path/to/file.py:build``, ``module.build``.
    """

    name = "MODEL"

    def convert(self, value: Any, param: Any, ctx: Any) -> list[int] | str:
        if isinstance(value, list):
            return value
        text = str(value).strip()
        if not text:
            self.fail("expected layer sizes like 784,128,128,10 or a model name")
        if not (text[0].isdigit() or text[0] == "-"):
            return text
        try:
            sizes = [int(part) for part in str(value).split(",")]
        except ValueError:
            self.fail(f"expected comma-separated whole numbers like 784,128,128,10, got {value!r}")
        if len(sizes) < 2 or min(sizes) < 1:
            self.fail(f"expected at least two sizes >= 1, got {value!r}")
        return sizes
