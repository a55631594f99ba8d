"""The wire format: event JSON exactly as .NET's System.Text.Json writes the seed's classes.

PascalCase names, GUIDs as lowercase strings, UTC times with up to seven fraction
digits, decimals as JSON numbers that keep their scale. The body always holds the
concrete event (the specification loses it by serialising the declared type).
The same JSON is what the event stores keep, so one codec serves store and broker.

Old schema versions are turned into the current one on read by registered
upcasters: functions from the body of version N to the body of version N+1.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from mussikon.domain.events import ALL_EVENT_TYPES, DomainEvent
from mussikon.domain.instant import format_dotnet, parse_dotnet

METADATA_FIELDS = frozenset({"correlation_id", "causation_id"})
"""Fields that travel beside the body (store columns, message headers), never inside it."""

_REQUIRED_ON_READ = frozenset({"id", "occurred_at"})
"""Defaulted when an event is made, but a document must carry them: inventing them on read
would make the same document a different event each time it is read."""

Body = dict[str, Any]
Upcaster = Callable[[Body], Body]


_NO_VALUE: Any = object()


class WireFormatError(ValueError):
    """A document is not a valid event: names the event type and the field at fault, and the
    value found there (`got`). `summary` says the same without the value: what logs show,
    since the value is part of a message's body."""

    def __init__(self, message: str, *, got: Any = _NO_VALUE) -> None:
        super().__init__(message if got is _NO_VALUE else f"{message}, got {got!r}")
        self.summary = message


class UnknownEventType(WireFormatError):
    """No event class is registered under this `EventType`."""


def pascal_case(name: str) -> str:
    """`musician_id` → `MusicianId`, as the .NET property is named."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


class _Expected(Exception):
    """A reader's refusal: says what the field must be (the codec adds the field and the value)."""


def _to_str(v: Any) -> str:
    if not isinstance(v, str):
        raise _Expected("a string")
    return v


def _to_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Expected("an integer")
    return v


def _to_decimal(v: Any) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, Decimal | int):
        raise _Expected("a JSON number")
    return v if isinstance(v, Decimal) else Decimal(v)


def _to_uuid(v: Any) -> UUID:
    if isinstance(v, str):
        try:  # msgspec parses the usual forms (hyphenated or 32 hex digits) in C
            return _convert(v, UUID)
        except msgspec.ValidationError:
            pass
        try:  # and uuid.UUID the rest it accepts (braces, "urn:uuid:")
            return UUID(v)
        except ValueError:
            pass
    raise _Expected("a GUID string such as 3f2c8a51-7d4e-4b9a-9f1e-2a6b8c0d4e11")


def _to_datetime(v: Any) -> datetime:
    if isinstance(v, str):
        # The common case, a UTC time with at most six fraction digits: what parse_dotnet
        # does for it is `datetime.fromisoformat` (found equal for every such string).
        if v[-1:] == "Z":
            dot = v.find(".")
            if dot == -1 or len(v) - dot <= 8:
                try:
                    value = _fromisoformat(v)
                except ValueError:
                    pass
                else:
                    if value.tzinfo is UTC:
                        return value
        try:
            return parse_dotnet(v)
        except ValueError:
            pass
    raise _Expected("an ISO 8601 time string such as 2026-11-27T21:53:28.1234567Z")


def _to_strings(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Expected("a list of strings")
    return tuple(v)


def _from_datetime(v: datetime) -> str:
    if v.__class__ is datetime and v.tzinfo is UTC:
        # format_dotnet's output for a plain UTC datetime, from the C isoformat: drop the
        # "+00:00", trim the fraction's trailing zeros (isoformat omits a zero fraction).
        text = v.isoformat()[:-6]
        return (text.rstrip("0") if v.microsecond else text) + "Z"
    return format_dotnet(v)


def _identity(v: Any) -> Any:
    return v


def _from_strings(v: tuple[str, ...]) -> list[str]:
    return list(v)


_READERS: dict[Any, Callable[[Any], Any]] = {
    str: _to_str, int: _to_int, Decimal: _to_decimal, UUID: _to_uuid,
    datetime: _to_datetime, tuple[str, ...]: _to_strings,
}
_WRITERS: dict[Any, Callable[[Any], Any]] = {
    str: _identity, int: _identity, Decimal: _identity, UUID: str,
    datetime: _from_datetime, tuple[str, ...]: _from_strings,
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    attr: str
    wire: str
    read: Callable[[Any], Any]
    write: Callable[[Any], Any]
    required: bool


class _EventShape:
    """How one event class maps to its JSON document: own fields first, then the base's."""

    def __init__(self, cls: type[DomainEvent]) -> None:
        self.cls = cls
        hints = typing.get_type_hints(cls)
        base = {f.name for f in dataclasses.fields(DomainEvent)}
        own: list[_Field] = []
        inherited: list[_Field] = []
        for f in dataclasses.fields(cls):
            if f.name in METADATA_FIELDS:
                continue
            kind = hints[f.name]
            has_default = (f.default is not dataclasses.MISSING
                           or f.default_factory is not dataclasses.MISSING)
            wire = f.metadata.get("wire", pascal_case(f.name))
            spec = _Field(f.name, wire, _READERS[kind], _WRITERS[kind],
                          required=not has_default or f.name in _REQUIRED_ON_READ)
            (inherited if f.name in base else own).append(spec)
        self.fields = (*own, *inherited)
        self.write = _compile_writer(cls.__name__, self.fields)
        self.native = _compile_writer(cls.__name__, self.fields, native=True)
        self.read = _compile_reader(cls, self.fields)
        self.read_json = _compile_json_reader(cls, self.fields)
        self.read_stored = _compile_json_reader(cls, self.fields, stored=True)


_NATIVE = (_identity, str, _from_strings)
"""Writers whose work msgspec does itself, in C and to the same JSON: a UUID as its
lowercase hyphenated string, a tuple as an array."""


def _compile_writer(event_type: str, fields: tuple[_Field, ...], *, native: bool = False
                    ) -> Callable[[DomainEvent], Body]:
    """`to_body` for one event class, as one dict display (no loop, no calls for the fields
    written as they are). Keys in the order the .NET class declares them: own fields, then
    the base's, with `EventType` between `OccurredAt` and `Version`.

    `native`: the body for msgspec to encode, which makes the same JSON with less Python:
    UUIDs and tuples left as they are, and a plain UTC time left as a datetime when msgspec
    writes it as .NET does (no fraction, or six digits without a trailing zero; msgspec
    writes six digits where .NET trims the zeros, so those go through `_from_datetime`)."""
    env: dict[str, Any] = {"D": datetime, "U": UTC}
    items: list[str] = []
    for n, f in enumerate(fields):
        if f.wire == "Version":
            items.append(f"{'EventType'!r}: {event_type!r}")
        value = f"e.{f.attr}"
        if native and f.write in _NATIVE:
            pass
        elif native and f.write is _from_datetime:
            env[f"w{n}"] = f.write
            x = f"x{n}"
            value = (f"({x} if ({x} := {value}).__class__ is D and {x}.tzinfo is U"
                     f" and ({x}.microsecond % 10 or not {x}.microsecond) else w{n}({x}))")
        elif f.write is not _identity:
            env[f"w{n}"] = f.write
            value = f"w{n}({value})"
        items.append(f"{f.wire!r}: {value}")
    source = f"def write(e):\n    return {{{', '.join(items)}}}\n"
    exec(source, env)  # built from field names and pascal_case, never from data
    write: Callable[[DomainEvent], Body] = env["write"]
    return write


_FALLBACK: Any = object()
"""What a compiled reader returns for anything but a well-formed document: the general
reader then decides (and names the field at fault)."""


def _compile_reader(cls: type[DomainEvent], fields: tuple[_Field, ...]
                    ) -> Callable[[Body, UUID | None, UUID | None], DomainEvent]:
    """`from_body` for one event class when every field is present and of its type (no
    upcasting): strings and integers checked inline, the other readers called once each,
    the event built with one call. Anything else returns `_FALLBACK`."""
    env: dict[str, Any] = {"cls": cls, "Expected": _Expected, "FALLBACK": _FALLBACK}
    lines = ["def read(body, correlation_id, causation_id):", "    get = body.get", "    try:"]
    for n, f in enumerate(fields):
        lines.append(f"        x{n} = get({f.wire!r})")
        if f.read is _to_str or f.read is _to_int:
            kind = "str" if f.read is _to_str else "int"
            lines.append(f"        if x{n}.__class__ is not {kind}: return FALLBACK")
        else:
            env[f"r{n}"] = f.read
            lines += [f"        if x{n} is None: return FALLBACK",
                      f"        x{n} = r{n}(x{n})"]
    lines += ["    except Expected:", "        return FALLBACK"]
    arguments = [f"{f.attr}=x{n}" for n, f in enumerate(fields)]
    lines.append(f"    return cls({', '.join(arguments)}, correlation_id=correlation_id,"
                 " causation_id=causation_id)")
    exec("\n".join(lines) + "\n", env)  # built from field names, never from data
    read: Callable[[Body, UUID | None, UUID | None], DomainEvent] = env["read"]
    return read


_SHADOW_TYPES: dict[Any, Any] = {datetime: str, Decimal: Any}
"""A field's type in the shadow struct of `_compile_json_reader`, where it is not its own: a
time stays a string (msgspec would round a seventh fraction digit away), a decimal is left
to the untyped decoder (which makes a JSON number with a fraction a Decimal by `float_hook`,
keeps an integer an int, and a string a string, all of which the reader then checks)."""


_STORED_SHADOW_TYPES: dict[Any, Any] = {Decimal: Any}
"""`_SHADOW_TYPES` for JSON whose times have at most six fraction digits: msgspec makes the
datetime, as `fromisoformat` would."""

_SEVENTH_DIGIT = re.compile(r"\.[0-9]{7}")


def may_have_ticks(data: str) -> bool:
    """Whether event JSON may hold a time with a seventh fraction digit (a 100 ns tick, kept
    by `Instant`), which only the exact readers keep: any dot followed by seven digits, so
    a string field that looks so answers True too (the exact reader is then merely slower)."""
    return _SEVENTH_DIGIT.search(data) is not None


def _builder_class(cls: type[DomainEvent]) -> type:
    """A subclass of the frozen event class `cls` whose instances are filled as plain objects
    are: it adds nothing to the instance (no slots of its own, so an instance has `cls`'s
    layout and becomes a `cls` by assigning `__class__`), and its attributes are set by the
    interpreter's plain slot store, where `cls`'s `__setattr__` refuses and setting a slot
    through its descriptor is a call. (`__delattr__` is reset too: both share the type's one
    attribute-setting slot, which is only the plain one when neither is overridden.)"""
    namespace: dict[str, Any] = {
        "__slots__": (), "__init__": object.__init__, "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__, "__module__": cls.__module__,
        "__qualname__": f"{cls.__qualname__}.builder"}
    return type(f"{cls.__name__}Builder", (cls,), namespace)


def _compile_json_reader(cls: type[DomainEvent], fields: tuple[_Field, ...], *,
                         stored: bool = False) -> Callable[..., DomainEvent | None]:
    """`decode` for one event class, from the JSON text, when the document is well formed
    (no upcasting): msgspec parses it in C into a struct of the class's fields under their
    wire names, checking strings, integers, GUIDs and lists of strings as the general reader
    does; times and decimals are checked and made here as the general readers make them in
    their common case. The event is made as an instance of `_builder_class(cls)`, its slots
    set by plain attribute stores, then made a `cls` by assigning `__class__` (a cheap check
    here: the same layout). Anything else (a field missing, null or of another type, a GUID
    or time in a rarer form) returns None: the general reader then decides, and names the
    field at fault. Setting each slot through its descriptor (`object.__new__(cls)` then
    `__set__`) would cost more than the JSON parse, and msgspec decoding into a dataclass
    sets each field by a name looked up on the type: the builder's plain stores are cheaper
    than both (figures: docs/performance-notes.md).

    `stored=True`: `read(data, event_id, correlation_id, causation_id)` for JSON that a
    store wrote and found no time with a seventh fraction digit in (`may_have_ticks`), the
    event id coming from the store's own column: msgspec parses the times too (it would
    round a seventh digit away) and the `Id` is not parsed at all; a time not in UTC still
    returns None. (msgspec also takes RFC 3339's lowercase `t` and `z`, which the codec
    never writes and the general reader refuses.)"""
    hints = typing.get_type_hints(cls)
    shadow_types = _STORED_SHADOW_TYPES if stored else _SHADOW_TYPES
    parsed = [f for f in fields if not (stored and f.attr == "id")]
    shadow = msgspec.defstruct(
        f"{cls.__name__}Wire", [(f.attr, shadow_types.get(hints[f.attr], hints[f.attr]))
                                for f in parsed],
        rename={f.attr: f.wire for f in parsed}, gc=False)  # never in a cycle: untracked
    decoder = msgspec.json.Decoder(shadow, float_hook=Decimal)
    env: dict[str, Any] = {"decode": decoder.decode, "Error": msgspec.MsgspecError,
                           "cls": cls, "builder": _builder_class(cls), "UTC": UTC,
                           "Decimal": Decimal, "fromisoformat": datetime.fromisoformat,
                           "to_datetime": _to_datetime}
    lines = [f"def read_json(data, {'event_id, ' if stored else ''}correlation_id,"
             " causation_id):",
             "    try:", "        s = decode(data)", "    except Error:", "        return None"]
    values = []
    for n, f in enumerate(fields):
        kind = hints[f.attr]
        if stored and f.attr == "id":
            values.append("event_id")
        elif kind is datetime and stored:  # parsed by msgspec: UTC is all left to check
            lines += [f"    x{n} = s.{f.attr}",
                      f"    if x{n}.tzinfo is not UTC:", "        return None"]
            values.append(f"x{n}")
        elif kind is datetime:
            # _to_datetime's common case inline: UTC, at most six fraction digits (a dot, if
            # any, among the last eight characters); any other form (.NET's seven digits, an
            # offset) through _to_datetime itself, which fails for what the general reader
            # would refuse (it then names the field).
            lines += [f"    x{n} = s.{f.attr}",
                      f"    if x{n}[-1:] == 'Z' and '.' not in x{n}[:-8]:",
                      "        try:", f"            x{n} = fromisoformat(x{n})",
                      "        except ValueError:", "            return None",
                      f"        if x{n}.tzinfo is not UTC:", "            return None",
                      "    else:", "        try:", f"            x{n} = to_datetime(x{n})",
                      "        except Exception:", "            return None"]
            values.append(f"x{n}")
        elif kind is Decimal:  # _to_decimal: a JSON number, never a string or a boolean
            lines += [f"    x{n} = s.{f.attr}",
                      f"    if x{n}.__class__ is not Decimal:",
                      f"        if x{n}.__class__ is not int:", "            return None",
                      f"        x{n} = Decimal(x{n})"]
            values.append(f"x{n}")
        else:
            values.append(f"s.{f.attr}")
    lines.append("    e = builder()")
    lines += [f"    e.{f.attr} = {value}" for f, value in zip(fields, values, strict=True)]
    lines += ["    e.correlation_id = correlation_id", "    e.causation_id = causation_id",
              "    e.__class__ = cls", "    return e"]
    exec("\n".join(lines) + "\n", env)  # built from field names, never from data
    read: Callable[..., DomainEvent | None] = env["read_json"]
    return read


def organizer_registered_v1_to_v2(body: Body) -> Body:
    """OrganizerRegisteredEvent 2 added the organizer's payment source; before, there was none."""
    body.setdefault("PaymentSource", "")
    return body


UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("OrganizerRegisteredEvent", 1): organizer_registered_v1_to_v2,
}
"""Every schema change of an event, by (event type, schema version N): the step from the body
of schema version N to that of N+1."""


_JSON_TYPES: dict[Any, Body] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    Decimal: {"type": "number", "description": "a .NET decimal: a JSON number that keeps its "
                                               "scale (1200.50)"},
    UUID: {"type": "string", "format": "uuid"},
    datetime: {"type": "string", "format": "date-time",
               "description": "UTC, up to seven fraction digits, as .NET writes a DateTime"},
    tuple[str, ...]: {"type": "array", "items": {"type": "string"}},
}
"""The JSON Schema of each field type the codec reads and writes (`_READERS`)."""


class EventCodec:
    """Turns events into wire JSON and back, by a registry of `EventType` → class."""

    def __init__(self, types: Iterable[type[DomainEvent]] = ALL_EVENT_TYPES,
                 upcasters: Mapping[tuple[str, int], Upcaster] | None = None) -> None:
        self._shapes = {cls.__name__: _EventShape(cls) for cls in types}
        self._upcasters = dict(UPCASTERS if upcasters is None else upcasters)
        self._fast_readers = {name: shape.read_json for name, shape in self._shapes.items()
                              if all(key[0] != name for key in self._upcasters)}
        self._stored_readers = {name: self._shapes[name].read_stored
                                for name in self._fast_readers}
        self._encoder = msgspec.json.Encoder(decimal_format="number")
        self._decoder = msgspec.json.Decoder(float_hook=Decimal)

    @property
    def event_types(self) -> list[str]:
        """The registered `EventType` names."""
        return list(self._shapes)

    def json_schema(self, event_type: str) -> Body:
        """The JSON Schema (draft 07) of `event_type`'s wire document, from the same field
        list the codec reads and writes: the .NET property names in their order, each with
        the JSON type its reader accepts; `required` what the reader refuses to go without.
        Other properties are allowed (a reader ignores them). `EventType` is written always
        and read when no header names the type."""
        shape = self._shapes.get(event_type)
        if shape is None:
            raise UnknownEventType(f"event type {event_type!r} is not registered")
        hints = typing.get_type_hints(shape.cls)
        properties: dict[str, Any] = {}
        for f in shape.fields:
            if f.wire == "Version":
                properties["EventType"] = {"type": "string", "const": event_type}
            properties[f.wire] = dict(_JSON_TYPES[hints[f.attr]])
        current = typing.cast(int, shape.cls.__dataclass_fields__["schema_version"].default)
        upcast = " (older ones are read through upcasters)" if current > 1 else ""
        properties["Version"] |= {
            "minimum": 1, "description": f"the event's schema version: {current}{upcast}"}
        schema: Body = {"type": "object", "title": event_type, "properties": properties,
                        "required": [f.wire for f in shape.fields if f.required]}
        if shape.cls.__doc__:
            schema["description"] = " ".join(shape.cls.__doc__.split())
        return schema

    def register_upcaster(self, event_type: str, from_schema_version: int,
                          upcaster: Upcaster) -> None:
        """Read bodies of `event_type` at `from_schema_version` through `upcaster` (to the
        next schema version)."""
        self._upcasters[(event_type, from_schema_version)] = upcaster
        self._fast_readers.pop(event_type, None)
        self._stored_readers.pop(event_type, None)

    @property
    def stored_readers(self) -> Mapping[str, Callable[[bytes | str, UUID, UUID | None,
                                                       UUID | None], DomainEvent | None]]:
        """For each event type no upcaster reads, for a store that keeps the event id in a
        column of its own and recorded, when it wrote the JSON, whether `may_have_ticks`
        found a time with a seventh fraction digit in it; for JSON in which it found none:
        `read(json, event_id, correlation_id, causation_id)`, the event straight from its
        JSON (msgspec parses the times, which would round such a digit away; the id is taken
        as given), or None for a document off the fast path (a field missing or malformed, a
        time not in UTC), which `decode` then reads (and names the field at fault)."""
        return self._stored_readers

    def to_body(self, event: DomainEvent) -> Body:
        """The event as a JSON-ready dict with the .NET property names."""
        shape = self._shapes.get(event.event_type)
        if shape is None:
            raise UnknownEventType(f"event type {event.event_type!r} is not registered")
        return shape.write(event)  # .NET's order: EventType between OccurredAt and Version

    def encode(self, event: DomainEvent) -> bytes:
        """The event's wire JSON (UTF-8): `to_body`'s JSON, with less done in Python."""
        shape = self._shapes.get(event.event_type)
        if shape is None:
            raise UnknownEventType(f"event type {event.event_type!r} is not registered")
        return self._encoder.encode(shape.native(event))

    def parse(self, data: bytes | str) -> Body:
        """Parse JSON text; decimals stay exact."""
        try:
            body = self._decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise WireFormatError(f"body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise WireFormatError(f"body must be a JSON object, got {_json_kind(body)}")
        return body

    def decode(self, data: bytes | str, event_type: str | None = None, *,
               correlation_id: UUID | None = None,
               causation_id: UUID | None = None) -> DomainEvent:
        """Parse wire JSON into its concrete event. `event_type` (from a header or a column) wins
        over the body's `EventType`."""
        if event_type:  # the common case in C, when the type is known before parsing
            read = self._fast_readers.get(event_type)
            if read is not None:
                event = read(data, correlation_id, causation_id)
                if event is not None:
                    return event
            elif (shape := self._shapes.get(event_type)) is not None:  # some versions upcast
                event = shape.read_json(data, correlation_id, causation_id)
                if event is not None and (event_type, event.schema_version) not in self._upcasters:
                    return event
        return self.from_body(self.parse(data), event_type, correlation_id=correlation_id,
                              causation_id=causation_id)

    def from_body(self, body: Body, event_type: str | None = None, *,
                  correlation_id: UUID | None = None,
                  causation_id: UUID | None = None) -> DomainEvent:
        """Build the concrete event from a parsed body, upcasting old versions first."""
        name = event_type or body.get("EventType")
        if not isinstance(name, str) or not name:
            raise UnknownEventType("the document names no EventType")
        shape = self._shapes.get(name)
        if shape is None:
            raise UnknownEventType(f"event type {name!r} is not registered")
        if (name, body.get("Version", 1)) not in self._upcasters:
            event = shape.read(body, correlation_id, causation_id)
            if event is not _FALLBACK:
                return event
        body = self._upcast(name, body)
        values: dict[str, Any] = {}
        for f in shape.fields:
            raw = body.get(f.wire, _MISSING)
            if raw is _MISSING or raw is None:
                if f.required:
                    state = "is missing" if raw is _MISSING else "is null"
                    raise WireFormatError(f"{name}: required field {f.wire!r} {state}")
                continue
            try:
                values[f.attr] = f.read(raw)
            except _Expected as exc:
                raise WireFormatError(f"{name}: field {f.wire!r} must be {exc}", got=raw) \
                    from None
        return shape.cls(**values, correlation_id=correlation_id, causation_id=causation_id)

    def _upcast(self, name: str, body: Body) -> Body:
        schema_version = body.get("Version", 1)
        while (upcaster := self._upcasters.get((name, schema_version))) is not None:
            body = upcaster(dict(body))
            schema_version += 1
            body["Version"] = schema_version
        return body


_MISSING = object()
_convert = msgspec.convert
_fromisoformat = datetime.fromisoformat


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"
