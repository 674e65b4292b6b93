"""Command-line options generated from a dataclass: one ``--flag`` per field.

The field's annotation gives the parsing (``int``, ``float``, ``str``; ``X | None`` also accepts
``none``, and ``all`` for counts; ``Literal[...]`` gives the choices; a fixed ``tuple[int, int]``
takes two values; ``bool`` gives ``--x/--no-x``), its ``metadata["help"]`` the help line, and its
default the help's "(default: ...)". Flags left out are absent from the parsed namespace, so
:func:`dataclass_overrides` returns only what the user set (never an excluded field).
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import Field, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


def add_dataclass_options(parser: argparse.ArgumentParser, config_class: type,
                          choices: Mapping[str, Sequence[str]] | None = None, exclude: Collection[str] = ()) -> None:
    """One ``--field-name`` option per field of ``config_class``, but those named in ``exclude``.

    ``choices`` maps a field to its allowed values: a registry's names, for fields whose
    annotation cannot name them, or the part of a ``Literal``'s values that a command supports.
    """
    choices = choices or {}
    hints = get_type_hints(config_class)
    unknown = (set(choices) | set(exclude)) - {f.name for f in fields(config_class)}
    if unknown:  # a renamed field would otherwise silently get its flag back
        raise TypeError(f"{config_class.__name__} has no field {', '.join(sorted(unknown))}")
    for config_field in fields(config_class):
        name = config_field.name
        if name in exclude:
            continue
        argument = _argument_for(hints[name])
        if name in choices:
            argument["choices"] = choices[name]
        default = f"(default: {_shown(_default(config_field))})".replace("%", "%%")
        help_text = config_field.metadata["help"].replace("%", "%%")  # argparse formats help with %
        if "choices" in argument:
            # A metavar, so that the choices are listed once (in the help line), not in the usage too.
            argument["metavar"] = name.upper()
            help_text += "; one of %(choices)s"
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                            help=f"{help_text} {default}", **argument)


def dataclass_overrides(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The fields of ``config_class`` given on the command line, by name."""
    return {f.name: getattr(args, f.name) for f in fields(config_class) if hasattr(args, f.name)}


def _argument_for(hint: Any) -> dict[str, Any]:
    """``add_argument`` keywords parsing a value of type ``hint``."""
    origin, type_args = get_origin(hint), get_args(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint in (int, float, str):
        return {"type": hint, "metavar": _metavar(hint)}
    if origin is Literal:
        return {"type": type(type_args[0]), "choices": type_args}
    if origin is tuple and Ellipsis not in type_args and len(set(type_args)) == 1:
        return {"type": type_args[0], "nargs": len(type_args), "metavar": _metavar(type_args[0])}
    if origin in (Union, types.UnionType) and len(type_args) == 2 and type(None) in type_args:
        value_type = next(t for t in type_args if t is not type(None))
        if value_type in (int, float, str):
            return {"type": _optional(value_type), "metavar": _metavar(value_type) + "|none"}
    raise TypeError(f"no command-line form for a field of type {hint}")


def _optional(value_type: type) -> Callable[[str], Any]:
    # For a count, None means "no limit": `all` reads better there than `none`.
    none_words = ("none", "all") if value_type is int else ("none",)

    def parse(text: str) -> Any:
        return None if text.lower() in none_words else value_type(text)

    parse.__name__ = value_type.__name__  # argparse names the type in "invalid int value: 'x'"
    return parse


def _default(config_field: Field) -> Any:
    if callable(config_field.default_factory):
        return config_field.default_factory()
    return config_field.default


def _shown(value: Any) -> str:
    """A default as it would be typed on the command line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def _metavar(value_type: type) -> str:
    return {int: "INT", float: "FLOAT", str: "TEXT"}[value_type]
