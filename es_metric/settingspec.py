"""How one setting is declared: its variable(s), how its text is read and written back, its default
(and how the docs show it) and what it means. ``config.Settings`` declares each field once with
:func:`setting`; reading the environment, writing it for a worker and the docs' settings table are
all derived from those declarations."""
from __future__ import annotations

import os
from dataclasses import MISSING, Field, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError

__all__ = ["Kind", "Spec", "TEXT", "PATH", "PATHS", "LIST", "FLAG", "choice", "integer",
           "setting", "spec_of", "table"]

MAX_SHOWN = 40  # characters of a refused value quoted in an error (a hostile value stays one short line)


def quoted(raw: str) -> str:
    """``raw`` as an error shows it: repr (control characters escaped, one line), cut to MAX_SHOWN."""
    text = repr(raw)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 4] + "...'"


@dataclass(frozen=True)
class Kind:
    """How a variable's text becomes a value (``parse(name, text)``, text never empty) and back."""

    parse: Callable[[str, str], Any]
    format: Callable[[Any], str] = str


def _integer(minimum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            if not raw.strip().isascii():  # int() would take other scripts' digits
                raise ValueError(raw)
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={quoted(raw)} is not an integer",
                              hint=f"set {name} to a whole number") from None
        if value < minimum:
            raise ConfigError(f"{name}={value} is below {minimum}",
                              hint=f"set {name} to {minimum} or more")
        return value
    return parse


def integer(minimum: int = 1) -> Kind:
    return Kind(_integer(minimum))


def choice(*allowed: str) -> Kind:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ConfigError(f"{name}={quoted(raw)} is not one of {', '.join(allowed)}",
                              hint=f"set {name} to one of {', '.join(allowed)}")
        return value
    return Kind(parse)


def _flag(name: str, raw: str) -> bool:
    return raw not in ("0", "false", "no")


TEXT = Kind(lambda name, raw: raw)
PATH = Kind(lambda name, raw: Path(raw))
PATHS = Kind(lambda name, raw: tuple(Path(p).resolve() for p in raw.split(os.pathsep) if p),
             lambda value: os.pathsep.join(str(p) for p in value))
LIST = Kind(lambda name, raw: tuple(e.strip() for e in raw.split(",") if e.strip()),
            lambda value: ",".join(value))
FLAG = Kind(_flag, lambda value: "1" if value else "0")


@dataclass(frozen=True)
class Spec:
    """One setting's declaration. ``read(env)`` overrides the plain reading of ``env[variables[0]]``
    (a value made of several variables); ``write`` likewise for :meth:`Settings.as_env`;
    ``worker``: handed to worker processes; ``derived``: follows from another setting's variables
    (not a row of the table)."""

    variables: tuple[str, ...]
    doc: str
    shown: str
    kind: Kind = TEXT
    worker: bool = True
    derived: bool = False
    read: Callable[[Mapping[str, str]], Any] | None = None
    write: Callable[[Any, Any], dict[str, str]] | None = None

    def value(self, env: Mapping[str, str], default: Any) -> Any:
        if self.read is not None:
            return self.read(env)
        name = self.variables[0]
        raw = env.get(name)
        return default() if not raw else self.kind.parse(name, raw)

    def env(self, settings: Any, value: Any) -> dict[str, str]:
        if self.write is not None:
            return self.write(settings, value)
        if value is None or self.derived:
            return {}
        return {self.variables[0]: self.kind.format(value)}


def setting(variables: str | tuple[str, ...], doc: str, *, default: Any = None,
            factory: Callable[[], Any] | None = None, shown: str | None = None, kind: Kind = TEXT,
            secret: bool = False, worker: bool = True, derived: bool = False,
            read: Callable[[Mapping[str, str]], Any] | None = None,
            write: Callable[[Any, Any], dict[str, str]] | None = None) -> Any:
    """A dataclass field declared with everything about its setting (see :class:`Spec`);
    ``secret`` keeps it out of ``repr``. ``shown``: the default as the docs say it."""
    names = (variables,) if isinstance(variables, str) else variables
    if shown is None:
        shown = "–" if default is None else f"`{default}`"
    spec = Spec(names, doc, shown, kind, worker, derived, read, write)
    meta = {"setting": spec}
    if factory is not None:
        return field(default_factory=factory, repr=not secret, metadata=meta)
    return field(default=default, repr=not secret, metadata=meta)


def spec_of(f: Field) -> Spec:
    return f.metadata["setting"]


def default_of(f: Field) -> Callable[[], Any]:
    if f.default_factory is not MISSING:
        return f.default_factory
    return lambda: f.default


def table(specs: list[Spec]) -> str:
    """The docs' settings table: one row per declared setting (derived ones left out)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for spec in specs:
        if not spec.derived:
            names = ", ".join(f"`{n}`" for n in spec.variables)
            rows.append(f"| {names} | {spec.shown} | {spec.doc} |")
    return "\n".join(rows) + "\n"
