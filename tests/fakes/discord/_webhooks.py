"""The interaction callback and the interaction webhooks (follow-ups, @original edits)."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ._common import (
    EPHEMERAL,
    LOADING,
    DiscordError,
    _FormErrors,
    _json_response,
    _now_iso,
    _Request,
    _Upload,
)
from ._interactions import FakeInteraction
from ._state import FakeState


class WebhooksMixin(FakeState):
    """Route handlers for interaction responses and follow-ups."""

    # Seconds an interaction token may be used for follow-ups and @original (Discord: 15 minutes);
    # after that every webhook call answers 401 / 50027 Invalid Webhook Token.
    interaction_token_lifetime: float = 900.0

    # ---------------------------------------------------------------------------------------------------
    # Route handlers: interaction callback and webhooks
    # ---------------------------------------------------------------------------------------------------

    def _interaction_metadata(self, inter: FakeInteraction) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": str(inter.id),
            "type": inter.type,
            "user": self.user_payload(inter.user_id),
            "authorizing_integration_owners": copy.deepcopy(
                inter.payload.get("authorizing_integration_owners", {})
            ),
        }
        if inter.type == 2:
            meta["name"] = inter.payload["data"]["name"]
            meta["command_type"] = 1
        if inter.source_message_id is not None:
            meta["interacted_message_id"] = str(inter.source_message_id)
        if inter.original_message_id is not None:
            meta["original_response_message_id"] = str(inter.original_message_id)
        return meta

    def _response_message(
        self,
        inter: FakeInteraction,
        data: dict[str, Any],
        uploads: Sequence[_Upload],
        *,
        loading: bool = False,
    ) -> dict[str, Any]:
        ephemeral = bool(int(data.get("flags") or 0) & EPHEMERAL)
        if loading:
            # The "<bot> is thinking..." placeholder: empty, flagged LOADING.
            mid = self._snowflake()
            msg = {
                "id": str(mid),
                "channel_id": str(inter.channel_id),
                "type": 20 if inter.type == 2 else 0,
                "content": "",
                "author": self.user_payload(self.application_id),
                "attachments": [],
                "embeds": [],
                "components": [],
                "mentions": [],
                "mention_roles": [],
                "mention_everyone": False,
                "pinned": False,
                "tts": False,
                "timestamp": _now_iso(),
                "edited_timestamp": None,
                "flags": LOADING | (EPHEMERAL if ephemeral else 0),
                "reactions": [],
                "allowed_mentions": None,
                "webhook_id": str(self.application_id),
                "application_id": str(self.application_id),
            }
            if inter.guild_id:
                msg["guild_id"] = str(inter.guild_id)
        else:
            msg = self._make_message(
                inter.channel_id,
                data,
                uploads,
                webhook=True,
                ephemeral=ephemeral,
                msg_type=20 if inter.type == 2 else 0,
            )
        msg["interaction_metadata"] = self._interaction_metadata(inter)
        if inter.type == 2:
            msg["interaction"] = {
                "id": str(inter.id),
                "type": 2,
                "name": inter.payload["data"]["name"],
                "user": self.user_payload(inter.user_id),
            }
        return msg

    async def _h_callback(self, req: _Request, iid: str, token: str) -> web.Response:
        inter = self.interactions.get(int(iid))
        if inter is None or inter.token != token:
            raise DiscordError(404, 10062, "Unknown interaction")
        body = req.json if isinstance(req.json, dict) else {}
        rtype = body.get("type")
        latency = time.monotonic() - (inter.dispatched_at or 0.0)
        if inter.callbacks:
            inter.rejected_callbacks.append({"type": rtype, "status": 400, "code": 40060, "latency": latency})
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if latency > self.ack_deadline:
            inter.rejected_callbacks.append({"type": rtype, "status": 404, "code": 10062, "latency": latency})
            raise DiscordError(404, 10062, "Unknown interaction")
        allowed = {
            2: {4, 5, 9},
            3: {4, 5, 6, 7, 9},
            4: {8},
            5: {4, 5, 6, 7} if inter.source_message_id else {4, 5},
        }
        if rtype not in allowed.get(inter.type, set()):
            raise DiscordError(
                400,
                50035,
                "Invalid Form Body",
                errors={
                    "type": {
                        "_errors": [
                            {
                                "code": "INTERACTION_RESPONSE_TYPE_INVALID",
                                "message": f"Interaction response type {rtype} is not valid for "
                                f"interaction type {inter.type}",
                            }
                        ]
                    }
                },
            )
        data = body.get("data") or {}
        record: dict[str, Any] = {
            "type": rtype,
            "data": copy.deepcopy(data),
            "files": [(u.filename, u.data, u.content_type) for u in req.uploads],
            "latency": latency,
            "message": None,
        }
        msg: dict[str, Any] | None = None
        events: list[tuple[str, dict[str, Any]]] = []
        if rtype == 4:
            self._check_upload_sizes(req.uploads)
            self._validate_message_payload(data, req.uploads, ("data",))
            msg = self._response_message(inter, data, req.uploads)
            self._store_message(msg)
            inter.original_message_id = int(msg["id"])
            events.append(("MESSAGE_CREATE", msg))
        elif rtype == 5:
            msg = self._response_message(inter, data, [], loading=True)
            self._store_message(msg)
            inter.original_message_id = int(msg["id"])
            inter._loading = True
            events.append(("MESSAGE_CREATE", msg))
        elif rtype in (6, 7):
            assert inter.source_message_id is not None
            src = self.get_message(inter.source_message_id)
            if src is None:
                raise DiscordError(404, 10008, "Unknown Message")
            if rtype == 7:
                self._check_upload_sizes(req.uploads)
                self._validate_message_payload(data, req.uploads, ("data",))
                new = self._edited(src, data, req.uploads)
                src.clear()
                src.update(new)
                events.append(("MESSAGE_UPDATE", src))
            msg = src
            inter.original_message_id = int(src["id"])
        elif rtype == 8:
            errors = _FormErrors()
            choices = data.get("choices")
            if not isinstance(choices, list):
                errors.add(("data", "choices"), "BASE_TYPE_REQUIRED", "This field is required")
            else:
                errors.max_len(("data", "choices"), choices, 25)
                for i, c in enumerate(choices):
                    if not isinstance(c.get("name"), str) or not 1 <= len(c["name"]) <= 100:
                        errors.add(
                            ("data", "choices", i, "name"),
                            "BASE_TYPE_BAD_LENGTH",
                            "Must be between 1 and 100 in length.",
                        )
                    errors.max_len(("data", "choices", i, "value"), c.get("value"), 100)
            errors.raise_if_any()
        elif rtype == 9:
            errors = _FormErrors()
            if not data.get("custom_id"):
                errors.add(("data", "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            errors.max_len(("data", "custom_id"), data.get("custom_id"), 100)
            title = data.get("title")
            if not isinstance(title, str) or not 1 <= len(title) <= 45:
                errors.add(("data", "title"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
            comps = data.get("components") or []
            if not 1 <= len(comps) <= 5:
                errors.add(
                    ("data", "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
                )
            errors.raise_if_any()
        if msg is not None:
            record["message"] = copy.deepcopy(msg)
        inter.callbacks.append(record)
        inter.ack_latency = latency
        for event, m in events:
            await self._announce(event, m)
        if req.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        ephemeral = bool(msg and int(msg["flags"]) & EPHEMERAL)
        interaction_obj: dict[str, Any] = {
            "id": str(inter.id),
            "type": inter.type,
            "response_message_loading": rtype == 5,
            "response_message_ephemeral": ephemeral,
        }
        resource: dict[str, Any] = {"type": rtype}
        if msg is not None:
            interaction_obj["response_message_id"] = msg["id"]
            resource["message"] = self._public_message(msg)
        return _json_response({"interaction": interaction_obj, "resource": resource})

    def _webhook_interaction(self, app_id: str, token: str) -> FakeInteraction:
        if int(app_id) == self.application_id:
            for inter in self.interactions.values():
                if inter.token == token:
                    if not inter.callbacks:
                        break  # no initial response yet -> the webhook does not exist yet
                    if time.monotonic() - (inter.dispatched_at or 0.0) > self.interaction_token_lifetime:
                        inter.expired_calls += 1
                        raise DiscordError(401, 50027, "Invalid Webhook Token")
                    return inter
        raise DiscordError(404, 10015, "Unknown Webhook")

    def _webhook_message(self, inter: FakeInteraction, which: str) -> dict[str, Any]:
        if which == "@original":
            mid = inter.original_message_id
        else:
            mid = int(which)
            if mid not in inter._webhook_message_ids and mid != inter.original_message_id:
                mid = None
        msg = self.get_message(mid) if mid is not None else None
        if msg is None:
            raise DiscordError(404, 10008, "Unknown Message")
        return msg

    async def _h_webhook_execute(self, req: _Request, app_id: str, token: str) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        payload = req.json or {}
        self._check_upload_sizes(req.uploads)
        self._validate_message_payload(payload, req.uploads)
        wait = req.query.get("wait", "false").lower() in ("1", "true")
        original = inter.original_message
        if inter._loading and original is not None:
            # Real Discord: the first follow-up after a deferred (type 5) response replaces the "thinking"
            # message and keeps the deferral's ephemeral state.
            eph = int(original["flags"]) & EPHEMERAL
            edit = {k: v for k, v in payload.items() if k != "flags"}
            edit.setdefault("content", payload.get("content"))
            edit["flags"] = int(payload.get("flags") or 0)
            new = self._edited(original, edit, req.uploads)
            new["flags"] = (int(new["flags"]) & ~(LOADING | EPHEMERAL)) | eph
            new["edited_timestamp"] = None
            original.clear()
            original.update(new)
            inter._loading = False
            msg = original
            await self._announce("MESSAGE_UPDATE", msg)
        else:
            ephemeral = bool(int(payload.get("flags") or 0) & EPHEMERAL)
            msg = self._make_message(
                inter.channel_id, payload, req.uploads, webhook=True, ephemeral=ephemeral
            )
            msg["interaction_metadata"] = self._interaction_metadata(inter)
            self._store_message(msg)
            await self._announce("MESSAGE_CREATE", msg)
        inter._webhook_message_ids.add(int(msg["id"]))
        inter.followups.append(copy.deepcopy(msg))
        if not wait:
            return web.Response(status=204)
        return _json_response(self._public_message(msg))

    async def _h_webhook_get(self, req: _Request, app_id: str, token: str, which: str) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        return _json_response(self._public_message(self._webhook_message(inter, which)))

    async def _h_webhook_edit(self, req: _Request, app_id: str, token: str, which: str) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        msg = self._webhook_message(inter, which)
        payload = req.json or {}
        self._check_upload_sizes(req.uploads)
        self._validate_message_payload(payload, req.uploads)
        new = self._edited(msg, payload, req.uploads)
        if int(msg["flags"]) & LOADING:
            new["flags"] = int(new["flags"]) & ~LOADING
            if int(msg["id"]) == inter.original_message_id:
                inter._loading = False
        msg.clear()
        msg.update(new)
        inter.followups.append(copy.deepcopy(msg))
        await self._announce("MESSAGE_UPDATE", msg)
        return _json_response(self._public_message(msg))

    async def _h_webhook_delete(self, req: _Request, app_id: str, token: str, which: str) -> web.Response:
        inter = self._webhook_interaction(app_id, token)
        msg = self._webhook_message(inter, which)
        self._delete_message(msg)
        inter.deleted_message_ids.append(int(msg["id"]))
        await self._announce("MESSAGE_DELETE", msg)
        return web.Response(status=204)
