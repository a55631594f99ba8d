"""Messages as the SDK encodes them: split into AMQP 1.0 sections, read the few fields the peer
needs, and write them back with the peer's own header and annotations. The properties, the
body and the footer go back byte for byte as they came."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proton import Data, Described, symbol, uint, ulong

HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS = 0x70, 0x71, 0x72
PROPERTIES, APPLICATION_PROPERTIES, DATA = 0x73, 0x74, 0x75

SCHEDULED_ENQUEUE_TIME = symbol("x-opt-scheduled-enqueue-time")


@dataclass(frozen=True)
class Section:
    """One section of an encoded message: its descriptor code, decoded value and bytes."""

    code: int
    value: Any
    encoded: bytes


def owned(value: Any) -> Any:
    """`value` with its binaries copied: proton returns them as views into the buffer of the
    `Data` or `Message` that decoded them, which go stale when that object is freed."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, Described):
        return Described(value.descriptor, owned(value.value))
    if isinstance(value, dict):
        return type(value)({owned(k): owned(v) for k, v in value.items()})
    if isinstance(value, list):
        return [owned(v) for v in value]
    return value


def split(encoded: bytes) -> list[Section]:
    """The sections of an encoded message, in order; ValueError if it is not one."""
    sections = []
    rest = encoded
    while rest:
        data = Data()
        used = data.decode(rest)
        data.rewind()
        data.next()
        value = owned(data.get_object())
        if not isinstance(value, Described) or not isinstance(value.descriptor, int):
            raise ValueError("not an AMQP message: a value that is not a section")
        sections.append(Section(int(value.descriptor), value.value, rest[:used]))
        rest = rest[used:]
    return sections


def unbatch(encoded: bytes) -> list[bytes]:
    """The messages one transfer carries. proton does not expose a transfer's message format,
    so a batch (format 0x80013700) is recognised by its body: data sections that each hold an
    encoded message, as ServiceBusMessageBatch sends them."""
    inner = [s.value for s in split(encoded) if s.code == DATA]
    if not inner:
        return [encoded]
    try:
        for message in inner:
            split(message)
    except Exception:  # proton raises its own DataException on bytes that are no message
        return [encoded]
    return inner


@dataclass(frozen=True)
class Envelope:
    """A message as the sender sent it. Delivery annotations (meant for one hop) are dropped."""

    header: list[Any]
    annotations: dict[Any, Any]
    properties: list[Any]
    application_properties: dict[Any, Any]
    properties_section: bytes
    rest: bytes
    """The body sections and the footer, as sent."""

    @classmethod
    def parse(cls, encoded: bytes) -> Envelope:
        every = split(encoded)
        sections = {s.code: s for s in every if s.code <= APPLICATION_PROPERTIES}

        def value(code: int, empty: Any) -> Any:
            return sections[code].value if code in sections else empty

        properties = sections.get(PROPERTIES)
        return cls(header=list(value(HEADER, [])), annotations=dict(value(MESSAGE_ANNOTATIONS, {})),
                   properties=list(value(PROPERTIES, [])),
                   application_properties=dict(value(APPLICATION_PROPERTIES, {})),
                   properties_section=properties.encoded if properties else b"",
                   rest=b"".join(s.encoded for s in every if s.code > APPLICATION_PROPERTIES))

    def _property(self, index: int) -> Any:
        return self.properties[index] if index < len(self.properties) else None

    @property
    def message_id(self) -> str | None:
        found = self._property(0)
        return None if found is None else str(found)

    @property
    def subject(self) -> str | None:
        found = self._property(3)
        return None if found is None else str(found)

    @property
    def event_type(self) -> str | None:
        found = self.application_properties.get("EventType")
        return None if found is None else str(found)

    @property
    def scheduled_enqueue_ms(self) -> int | None:
        found = self.annotations.get(SCHEDULED_ENQUEUE_TIME)
        return None if found is None else int(found)

    def encode(self, *, delivery_count: int, annotations: dict[str, Any],
               application_properties: dict[str, Any] | None = None) -> bytes:
        """The message with a header carrying `delivery_count` (written even when 0, as the
        service does: the SDK reports no count otherwise), the peer's annotations added to
        the sender's, and `application_properties` added to the sender's."""
        header = [*(self.header + [None] * 4)[:4], uint(delivery_count)]
        merged = {**self.annotations, **{symbol(k): v for k, v in annotations.items()}}
        app = {**self.application_properties, **(application_properties or {})}
        data = Data()
        data.put_object(Described(ulong(HEADER), header))
        data.put_object(Described(ulong(MESSAGE_ANNOTATIONS), merged))
        head = data.encode()
        tail = Data()
        if app:
            tail.put_object(Described(ulong(APPLICATION_PROPERTIES), app))
        return head + self.properties_section + tail.encode() + self.rest

