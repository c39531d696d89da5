"""Options declared once: a step's dataclass fields give its defaults, help, bounds, CLI flags and checks.

Every option of a step is one field of that step's config dataclass (``PrepareConfig``,
``TrainingArguments``, ...)::

    num_train_epochs: int = field(default=3, metadata={"help": "Passes over the training split.", "min": 1})

The metadata keys this module reads:

- ``help``: one line for ``--help`` and the pipeline's parameter description;
- ``min`` / ``max`` (inclusive), ``above`` / ``below`` (exclusive): bounds, checked at parse time and
  by `check`;
- ``fix``: a sentence appended to an out-of-bounds error, saying what to choose instead;
- ``aliases``: more flags for the same option (``["--epochs"]``); the first alias, when given, is the
  flag `python -m pipelines run` shows first.

``Literal[...]`` types become choices.  Values are handed from step to step by name (`from_mapping`):
an unknown name fails with the list of the valid ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

T = TypeVar("T")

_BOUNDS = (("min", "at least", float.__ge__), ("max", "at most", float.__le__))
_STRICT = (("above", "above", float.__gt__), ("below", "below", float.__lt__))


def flag(name: str) -> str:
    """The command-line flag of an option name: ``max_seq_length`` → ``--max-seq-length``."""
    return "--" + name.replace("_", "-")


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def field_of(cls: type, name: str) -> dataclasses.Field:
    """The field ``name`` of dataclass ``cls``."""
    return _fields(cls)[name]


def _hints(cls: type) -> dict[str, Any]:
    import sys

    module = sys.modules[cls.__module__]
    return typing.get_type_hints(cls, vars(module))


def value_type(cls: type, name: str) -> tuple[type, tuple[Any, ...] | None]:
    """(Python type, choices or None) of an option; ``X | None`` counts as X."""
    hint = _hints(cls)[name]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint, origin = args[0], typing.get_origin(args[0])
    if origin is Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), choices
    return hint, None


def flags(cls: type, name: str) -> list[str]:
    """The flags of an option: its aliases first (the short names users type), then ``--field-name``."""
    aliases = list(field_of(cls, name).metadata.get("aliases", ()))
    return [*aliases, flag(name)] if flag(name) not in aliases else aliases


def check_value(cls: type, name: str, value: Any, shown: str | None = None) -> None:
    """Check one value against its field's bounds and choices.

    Raises:
        ValueError: ``"<flag> must be …, got …"`` (``shown``: the flag to name; default ``--field-name``).
    """
    meta = field_of(cls, name).metadata
    shown = flag(name) if shown is None else shown
    _, choices = value_type(cls, name)
    if choices is not None and value not in choices:
        raise ValueError(f"{shown} must be one of {', '.join(map(str, choices))}; got {value!r}.")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{shown} must be a finite number, got {value}.")
    for key, words, ok in (*_BOUNDS, *_STRICT):
        if key in meta and not ok(float(value), float(meta[key])):
            fix = f" {meta['fix']}" if "fix" in meta else ""
            raise ValueError(f"{shown} must be {words} {meta[key]}, got {value}.{fix}")


def check_fields(config: Any) -> None:
    """Check every field of a config instance against its declared bounds and choices."""
    for name in _fields(type(config)):
        check_value(type(config), name, getattr(config, name))


def check(config: Any) -> None:
    """Check a config instance: its ``validate()`` where it has one (which calls `check_fields`), else
    `check_fields`."""
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    else:
        check_fields(config)


def from_mapping(cls: type[T], values: Mapping[str, Any], *, ignore_unknown: bool = False) -> T:
    """An instance of ``cls`` from the values in ``values`` whose names are its fields.

    Raises:
        ValueError: a name that is no field of ``cls`` (unless ``ignore_unknown``), listing the valid ones.
    """
    known = _fields(cls)
    unknown = sorted(set(values) - set(known))
    if unknown and not ignore_unknown:
        raise ValueError(f"Unknown option(s) {unknown} for {cls.__name__}; valid: {', '.join(sorted(known))}.")
    return cls(**{k: coerce(cls, k, v) for k, v in values.items() if k in known})


def coerce(cls: type, name: str, value: Any) -> Any:
    """``value`` as the option's declared type where that loses nothing: a KFP dict parameter (JSON) brings
    ``16.0`` for an int option, and an int is a fine float.

    Raises:
        ValueError: a number that is not whole for an int option.
    """
    kind, _ = value_type(cls, name)
    if kind is int and isinstance(value, float) and not isinstance(value, bool):
        if not value.is_integer():
            raise ValueError(f"{flag(name)} must be a whole number, got {value}.")
        return int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _converter(cls: type, name: str) -> Any:
    kind, _ = value_type(cls, name)

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from err
        try:
            check_value(cls, name, value, shown="")
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).strip()) from err
        return value

    convert.__name__ = kind.__name__
    return convert


def add_argument(
    parser: Any, cls: type, name: str, *, default: Any = dataclasses.MISSING, underscores: bool = False
) -> None:
    """Add the flag(s) of one option to an argparse parser (or group), with help, default and checks.

    ``underscores``: accept ``--field_name`` too (the Hugging Face spelling).
    """
    f = field_of(cls, name)
    kind, choices = value_type(cls, name)
    if default is dataclasses.MISSING:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    kwargs: dict[str, Any] = {"dest": name, "default": default, "help": f.metadata.get("help", "")}
    if choices is not None:
        kwargs["choices"] = choices
    if kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = _converter(cls, name)
        kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}" if choices else kind.__name__.upper()
    names = flags(cls, name)
    if underscores and "_" in name:
        names.append("--" + name)
    parser.add_argument(*names, **kwargs)


def add_arguments(parser: Any, cls: type, names: Iterable[str] | None = None) -> None:
    """Add every option of ``cls`` (or those in ``names``) to a parser."""
    for name in names if names is not None else _fields(cls):
        add_argument(parser, cls, name)


def to_argv(values: Mapping[str, Any]) -> list[str]:
    """``--name value`` pairs for a CLI built with `add_arguments` (the inverse of parsing)."""
    argv: list[str] = []
    for name, value in values.items():
        if isinstance(value, bool):
            argv.append(flag(name) if value else "--no-" + flag(name)[2:])
        else:
            argv += [flag(name), str(value)]
    return argv


def defaults(cls: type) -> dict[str, Any]:
    """Every option's default (options without one, which a caller must give, are left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: …)`` where there is a default worth showing: not None, not False (an off switch such
    as ``store_true``).

    argparse makes only the formatter classes' names public and has no public hook that decides per argument
    whether its default is shown; this overrides ``_get_help_string``, the method `ArgumentDefaultsHelpFormatter`
    itself overrides (checked on Python 3.11; tests/unit/test_no_private_api.py fails if it changes).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action) or ""


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (``error: …``) and exit code 2, without the usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
