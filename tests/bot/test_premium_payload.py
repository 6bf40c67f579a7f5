"""bot.premium.from_payload: an entitlement listed by Discord's REST route, read as untrusted input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot.premium import from_payload
from storage.premium import Entitlement


def test_a_listed_entitlement_becomes_the_plain_value() -> None:
    raw = {
        "id": "1300000000000000001",
        "sku_id": "1200000000000000002",
        "application_id": "1100000000000000003",
        "user_id": "1000000000000000004",
        "type": 1,
        "deleted": True,
        "consumed": False,
        "ends_at": "2026-12-31T00:00:00+00:00",
    }
    assert from_payload(raw) == Entitlement(
        id=1300000000000000001,
        sku_id=1200000000000000002,
        user_id=1000000000000000004,
        guild_id=None,
        deleted=True,
        consumed=False,
        ends_at=datetime(2026, 12, 31, tzinfo=UTC).timestamp(),
    )


@pytest.mark.parametrize(
    "raw",
    [None, [], "1", {"sku_id": "2"}, {"id": "1"}, {"id": True, "sku_id": "2"}, {"id": "-1", "sku_id": "2"}],
)
def test_what_is_not_an_entitlement_is_none(raw: Any) -> None:
    assert from_payload(raw) is None


def test_odd_fields_are_read_safely() -> None:
    ent = from_payload(
        {"id": 5, "sku_id": "6", "user_id": {"x": 1}, "deleted": "yes", "consumed": 1, "ends_at": "soon"}
    )
    # Only a JSON true is true; a field of the wrong shape is absent.
    assert ent == Entitlement(id=5, sku_id=6, user_id=None, guild_id=None, deleted=False, consumed=False)


@pytest.mark.parametrize("bad", ["0", 0, "00", str(2**63), 2**63, "99999999999999999999"])
def test_an_id_must_be_a_positive_64_bit_signed_integer(bad: Any) -> None:
    assert from_payload({"id": bad, "sku_id": "6"}) is None
    assert from_payload({"id": "5", "sku_id": bad}) is None
    ent = from_payload({"id": "5", "sku_id": "6", "user_id": bad})
    assert ent is not None and ent.user_id is None
    top = from_payload({"id": str(2**63 - 1), "sku_id": "6"})
    assert top is not None and top.id == 2**63 - 1


def test_the_type_is_read_when_it_is_a_number() -> None:
    assert getattr(from_payload({"id": "5", "sku_id": "6", "type": 4}), "type", "absent") == 4
    assert getattr(from_payload({"id": "5", "sku_id": "6", "type": "4"}), "type", "absent") is None
    assert getattr(from_payload({"id": "5", "sku_id": "6", "type": True}), "type", "absent") is None
