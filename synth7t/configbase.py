"""The base of every configuration dataclass: named presets, JSON round trip, strict keys, fingerprint.

A config is a dataclass (frozen or not) that inherits :class:`Config` and sets its class attributes, annotated
``ClassVar`` (or not annotated) so that the dataclass does not take them for fields::

    @dataclass
    class MyConfig(Config):
        PRESETS: ClassVar[dict] = {"quick": {"iterations": 10, "registration": {"spacing": 2.0}}}
        RUNTIME_FIELDS: ClassVar[tuple] = ("threads",)   # do not change results: not fingerprinted
        RENAMED: ClassVar[dict] = {"reg_spacing": "registration.spacing"}   # old key -> where it lives now
        iterations: int = 100
        threads: int = 1
        registration: RegistrationConfig = dataclasses.field(default_factory=RegistrationConfig)

A field whose type is itself a :class:`Config` (one concept used by several configs, e.g. the registration's
stages) is written as a nested mapping in presets, overrides and JSON; a mapping *changes* the fields it names and
keeps the others (the owner's default, or the preset's value), so ``{"registration": {"spacing": 2.0}}`` changes one
setting. Unknown names are errors everywhere (presets, overrides, JSON): a typo never falls back to a default. Keys
of files written before a setting moved (:attr:`Config.RENAMED`) are read from JSON at their new place; given
as a preset or an override they are errors that name the new place.

Every config is made one way from a preset (:meth:`Config.from_preset`) and read back one way from its JSON form
(:meth:`Config.from_dict`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from typing import Any, ClassVar, Iterable, Mapping, Optional, Tuple, TypeVar

__all__ = ["Config"]

C = TypeVar("C", bound="Config")


def _jsonable(value: Any) -> Any:
    """Tuples (also nested in lists and dicts) as lists and nested configs as dicts, so that ``json.dumps`` takes
    the value."""
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _restore(value: Any, hint: Any) -> Any:
    """Lists back into tuples wherever the annotation ``hint`` says tuple (JSON has no tuples)."""
    if not isinstance(value, list):
        return value
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for h in members:
        origin, args = typing.get_origin(h) or h, typing.get_args(h)
        if origin is tuple:
            inner = (args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis
                     else args if len(args) == len(value) else (Any,) * len(value))
            return tuple(_restore(v, a) for v, a in zip(value, inner))
        if origin is list:
            return [_restore(v, args[0] if args else Any) for v in value]
    return value


@functools.lru_cache(maxsize=None)
def _field_hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation; a field's default type when an annotation cannot be resolved."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation naming something its module does not import
        hints = {}
    return {f.name: hints.get(f.name, type(f.default) if f.default is not dataclasses.MISSING else Any)
            for f in dataclasses.fields(cls)}


class Config:
    """Mixin for config dataclasses: presets, ``to_dict``/``from_dict``, ``replace`` and ``fingerprint``.

    Attributes:
        PRESETS: preset name -> field values (a mapping of overrides of the defaults, or an instance).
        RUNTIME_FIELDS: fields that do not change results (threads, workers, ...): left out of the fingerprint.
    """

    PRESETS: ClassVar[Mapping[str, Any]] = {}
    RUNTIME_FIELDS: ClassVar[Tuple[str, ...]] = ()
    RENAMED: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def nested_fields(cls) -> dict[str, type]:
        """Field name -> config class, for the fields whose type is a :class:`Config`."""
        return {k: h for k, h in _field_hints(cls).items() if isinstance(h, type) and issubclass(h, Config)}

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        """The dataclass field names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def check_keys(cls, keys: Iterable[str], where: Optional[str] = None) -> None:
        """Raise ``ValueError`` naming every key that is not a field, with the known keys; ``where`` prefixes it."""
        unknown = sorted(set(keys) - set(cls.field_names()))
        if unknown:
            moved = [f"{k} is now {cls.RENAMED[k]}" for k in unknown if k in cls.RENAMED]
            raise ValueError(f"{where + ': ' if where else ''}unknown {cls.__name__} key(s) {unknown}"
                             + (f" ({'; '.join(moved)}: give it as a nested mapping)" if moved else "")
                             + f"; known keys: {', '.join(sorted(cls.field_names()))}")

    @classmethod
    def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
        """The preset ``name`` of :attr:`PRESETS` with some fields overridden.

        Raises:
            ValueError: unknown preset (the message lists the known ones) or unknown override key.
        """
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; known presets: "
                             f"{', '.join(cls.PRESETS) or 'none'}")
        cls.check_keys(overrides, "overrides")
        preset = cls.PRESETS[name]
        if isinstance(preset, Mapping):
            cls.check_keys(preset, f"preset {name!r}")
            preset = cls(**cls._nested(preset))
        elif not isinstance(preset, cls):
            raise TypeError(f"{cls.__name__}.PRESETS[{name!r}] is a {type(preset).__name__}; a preset must be a "
                            f"mapping of field values or a {cls.__name__}")
        if "preset" in cls.field_names() and "preset" not in overrides:
            overrides = {**overrides, "preset": name}  # the config records where it started
        return preset.replace(**overrides)

    @classmethod
    def _nested(cls, values: Mapping[str, Any], current: Optional["Config"] = None) -> dict[str, Any]:
        """``values`` with each mapping given for a nested config field applied to that field's current value
        (``current``'s, or the default), so that a mapping changes only the settings it names."""
        out = dict(values)
        for name, sub in cls.nested_fields().items():
            v = out.get(name)
            if isinstance(v, Mapping):
                base = getattr(current, name) if current is not None else cls._default(name)
                out[name] = sub.from_dict_onto(v, base)
            elif v is not None and name in out and not isinstance(v, sub):
                raise ValueError(f"{cls.__name__}.{name} must be a {sub.__name__} or a mapping of its fields, "
                                 f"got {type(v).__name__}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, JSON-ready (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Rebuild a config from :meth:`to_dict` output (e.g. read from JSON); absent fields take defaults.

        Lists are turned back into tuples for the fields annotated as tuples.

        Raises:
            ValueError: ``data`` is not a mapping, or holds a key that is not a field (named, with the known keys).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}.from_dict needs a mapping of field values, got {type(data).__name__}")
        data = cls._moved_in(cls.upgrade(data))
        cls.check_keys(data)
        hints = _field_hints(cls)
        nested = cls.nested_fields()
        values = {k: (nested[k].from_dict_onto(v, cls._default(k)) if k in nested and isinstance(v, Mapping)
                      else _restore(v, hints[k])) for k, v in data.items()}
        return cls(**values)

    @classmethod
    def upgrade(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """Hook for a subclass: the JSON form of an older version of the config, as this version reads it
        (called by :meth:`from_dict` before the keys are checked). The default returns ``data`` unchanged."""
        return data

    @classmethod
    def _moved_in(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Keys of :attr:`RENAMED` (``old -> "field.key"``) moved into their nested mapping."""
        out = dict(data)
        for old, new in cls.RENAMED.items():
            if old in out:
                outer, inner = new.split(".", 1)
                out[outer] = {**dict(out.get(outer) or {}), inner: out.pop(old)}
        return out

    @classmethod
    def _default(cls, name: str) -> Any:
        """The default value of field ``name`` (its ``default_factory``'s, for a nested config)."""
        f = next(f for f in dataclasses.fields(cls) if f.name == name)  # type: ignore[arg-type]
        if f.default is not dataclasses.MISSING:
            return f.default
        return f.default_factory()  # type: ignore[misc]

    @classmethod
    def from_dict_onto(cls: type[C], data: Mapping[str, Any], base: C) -> C:
        """``base`` with the fields of ``data`` (JSON form, lists for tuples) changed (a nested config's
        :meth:`from_dict`, whose absent keys keep its owner's default)."""
        cls.check_keys(data)
        hints = _field_hints(cls)
        return base.replace(**{k: _restore(v, hints[k]) for k, v in data.items()})

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again); unknown field names are ``ValueError``."""
        self.check_keys(changes)
        return dataclasses.replace(self, **type(self)._nested(changes, self))  # type: ignore[type-var]

    def fingerprint_dict(self) -> dict[str, Any]:
        """What :meth:`fingerprint` hashes: :meth:`to_dict` less :attr:`RUNTIME_FIELDS`; extend it in a subclass
        to hash more (e.g. a pipeline version)."""
        self.check_keys(self.RUNTIME_FIELDS, f"{type(self).__name__}.RUNTIME_FIELDS")
        return {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_FIELDS}

    def fingerprint(self) -> str:
        """Short stable digest (16 hex digits of SHA-256 of the sorted JSON) of the fields that change results."""
        text = json.dumps(self.fingerprint_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
