"""Checks on metadata JSON handled as raw strings: decode only what a decision needs."""

from __future__ import annotations

import msgspec


def is_json(text: str | bytes) -> bool:
    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError:
        return False
    return True


def is_json_object(text: str | bytes) -> bool:
    try:
        return isinstance(msgspec.json.decode(text), dict)
    except msgspec.DecodeError:
        return False
