"""How the stores write documents: JSON whose decimals come back exact."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from mussikon.ports.documents import Document

_ENCODER = msgspec.json.Encoder(decimal_format="number")


_DECODER = msgspec.json.Decoder(float_hook=Decimal)


def encode_document(doc: Document) -> bytes:
    """JSON for a document; decimals stay exact."""
    return _ENCODER.encode(doc)


def decode_document(data: bytes | str) -> Document:
    """A document from its JSON; fractional numbers come back as Decimal."""
    value = _DECODER.decode(data)
    if not isinstance(value, dict):
        raise ValueError("a stored document must be a JSON object")
    return value
