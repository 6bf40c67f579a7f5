"""Messages and threads: attachments, mentions, storing and announcing messages, and their REST routes."""

from __future__ import annotations

import contextlib
import copy
import re
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ._common import (
    EPHEMERAL,
    HAS_THREAD,
    IS_COMPONENTS_V2,
    SUPPRESS_EMBEDS,
    SUPPRESS_NOTIFICATIONS,
    THREAD_TYPES,
    DiscordError,
    Intent,
    Perm,
    _attachment_flags,
    _FormErrors,
    _guess_content_type,
    _image_size,
    _json_response,
    _now_iso,
    _Request,
    _sanitize_filename,
    _Upload,
)
from ._state import FakeState


class MessagesMixin(FakeState):
    """Message and thread state, and the channel/message/thread route handlers."""

    # ---------------------------------------------------------------------------------------------------
    # Messages
    # ---------------------------------------------------------------------------------------------------

    def _new_attachment(
        self, channel_id: int, upload: _Upload, spec: dict[str, Any] | None
    ) -> dict[str, Any]:
        aid = self._snowflake()
        fname = _sanitize_filename((spec or {}).get("filename") or upload.filename)
        ctype = _guess_content_type(fname, upload.content_type)
        path = f"/attachments/{channel_id}/{aid}/{fname}"
        self._cdn[path] = (upload.data, ctype)
        width, height = _image_size(upload.data, ctype)
        att: dict[str, Any] = {
            "id": str(aid),
            "filename": fname,
            "size": len(upload.data),
            "url": self._cdn_url(path),
            "proxy_url": self._cdn_url(path, proxy=True),
            "width": width,
            "height": height,
            "flags": _attachment_flags(fname),
            "data": upload.data,
        }
        if ctype is not None:
            att["content_type"] = ctype
        if spec and spec.get("description"):
            att["description"] = spec["description"]
        if spec and spec.get("title"):
            att["title"] = spec["title"]
        return att

    def _build_attachments(
        self,
        channel_id: int,
        specs: list[dict[str, Any]] | None,
        uploads: Sequence[_Upload],
        existing: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        by_index: dict[int, _Upload] = {}
        for pos, up in enumerate(uploads):
            idx = up.index
            by_index[idx if idx is not None else pos] = up
        used: set[int] = set()
        result: list[dict[str, Any]] = []
        if specs is None:
            result.extend(existing)
        else:
            existing_by_id = {int(a["id"]): a for a in existing}
            for i, spec in enumerate(specs):
                sid = spec.get("id")
                sid_int = int(sid) if sid is not None and str(sid).isdigit() else None
                if sid_int is not None and sid_int in by_index and sid_int not in existing_by_id:
                    result.append(self._new_attachment(channel_id, by_index[sid_int], spec))
                    used.add(sid_int)
                elif sid_int is not None and sid_int in existing_by_id:
                    kept = existing_by_id[sid_int]
                    if spec.get("description") is not None:
                        kept = {**kept, "description": spec["description"]}
                    result.append(kept)
                else:
                    errors = _FormErrors()
                    errors.add(("attachments", i, "id"), "ATTACHMENT_NOT_FOUND", "Unknown attachment")
                    errors.raise_if_any()
        for idx, up in sorted(by_index.items()):
            if idx not in used:
                result.append(self._new_attachment(channel_id, up, None))
        return result

    def _compute_mentions(self, msg: dict[str, Any]) -> None:
        content = msg.get("content") or ""
        am = msg.get("allowed_mentions")
        if am is None:
            parse = {"users", "roles", "everyone"}
            allowed_users: set[int] = set()
            allowed_roles: set[int] = set()
        else:
            parse = set(am.get("parse") or [])
            allowed_users = {int(u) for u in am.get("users") or []}
            allowed_roles = {int(r) for r in am.get("roles") or []}
        mentions: list[dict[str, Any]] = []
        for raw in dict.fromkeys(int(x) for x in re.findall(r"<@!?(\d+)>", content)):
            if raw in self.users and ("users" in parse or raw in allowed_users):
                mentions.append(self.user_payload(raw))
        ref = msg.get("referenced_message")
        if ref and (am is None or am.get("replied_user", True)):
            ref_author = int(ref["author"]["id"])
            if ref_author not in [int(u["id"]) for u in mentions] and ref_author in self.users:
                mentions.append(self.user_payload(ref_author))
        roles = [
            str(r)
            for r in dict.fromkeys(int(x) for x in re.findall(r"<@&(\d+)>", content))
            if "roles" in parse or r in allowed_roles
        ]
        everyone = bool(re.search(r"@(everyone|here)", content)) and "everyone" in parse
        if everyone and msg.get("guild_id"):
            author = int(msg["author"]["id"])
            everyone = bool(self.permissions_for(author, int(msg["channel_id"])) & Perm.MENTION_EVERYONE)
        msg["mentions"] = mentions
        msg["mention_roles"] = roles
        msg["mention_everyone"] = everyone

    def _make_message(
        self,
        channel_id: int,
        payload: dict[str, Any],
        uploads: Sequence[_Upload],
        *,
        author_id: int | None = None,
        msg_type: int = 0,
        webhook: bool = False,
        ephemeral: bool = False,
        message_id: int | None = None,
    ) -> dict[str, Any]:
        channel = self.channels[channel_id]
        mid = message_id or self._snowflake()
        flags = int(payload.get("flags") or 0) & (SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2)
        if ephemeral:
            flags |= EPHEMERAL
        embeds = copy.deepcopy(payload.get("embeds") or [])
        for e in embeds:
            e.setdefault("type", "rich")
            e.setdefault("content_scan_version", 0)
        msg: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "type": msg_type,
            "content": payload.get("content") or "",
            "author": self.user_payload(author_id or self.application_id),
            "attachments": [],
            "embeds": embeds,
            "components": copy.deepcopy(payload.get("components") or []),
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": bool(payload.get("tts")),
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "flags": flags,
            "reactions": [],
            "allowed_mentions": copy.deepcopy(payload.get("allowed_mentions")),
        }
        if channel.get("guild_id"):
            msg["guild_id"] = channel["guild_id"]
        if payload.get("nonce") is not None:
            msg["nonce"] = payload["nonce"]
        if payload.get("sticker_ids"):
            msg["sticker_items"] = [
                {"id": str(s), "name": "sticker", "format_type": 1} for s in payload["sticker_ids"]
            ]
        if payload.get("poll"):
            msg["poll"] = copy.deepcopy(payload["poll"])
        if webhook:
            msg["webhook_id"] = str(self.application_id)
            msg["application_id"] = str(self.application_id)
        ref = payload.get("message_reference")
        if isinstance(ref, dict) and ref.get("message_id"):
            target = self.get_message(int(ref["message_id"]))
            if target is None:
                if ref.get("fail_if_not_exists", True):
                    errors = _FormErrors()
                    errors.add(("message_reference",), "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
                    errors.raise_if_any()
            else:
                msg["message_reference"] = {
                    "type": ref.get("type", 0),
                    "message_id": target["id"],
                    "channel_id": target["channel_id"],
                    "guild_id": target.get("guild_id"),
                }
                msg["referenced_message"] = self._public_message(target)
                if msg_type == 0:
                    msg["type"] = 19
        msg["attachments"] = self._build_attachments(channel_id, payload.get("attachments"), uploads, [])
        self._compute_mentions(msg)
        if self._is_empty(msg):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        return msg

    def _edited(
        self, msg: dict[str, Any], payload: dict[str, Any], uploads: Sequence[_Upload]
    ) -> dict[str, Any]:
        """Return a new dict: ``msg`` with ``payload`` applied (PATCH semantics)."""
        new = dict(msg)
        if "content" in payload:
            new["content"] = payload["content"] or ""
        if "embeds" in payload:
            embeds = copy.deepcopy(payload["embeds"] or [])
            for e in embeds:
                e.setdefault("type", "rich")
            new["embeds"] = embeds
        if "components" in payload:
            new["components"] = copy.deepcopy(payload["components"] or [])
        if "allowed_mentions" in payload:
            new["allowed_mentions"] = copy.deepcopy(payload["allowed_mentions"])
        if payload.get("flags") is not None:
            sent = int(payload["flags"])
            keep = int(msg["flags"]) & ~(SUPPRESS_EMBEDS | IS_COMPONENTS_V2)
            new["flags"] = keep | (sent & (SUPPRESS_EMBEDS | IS_COMPONENTS_V2))
        if "attachments" in payload or uploads:
            new["attachments"] = self._build_attachments(
                int(msg["channel_id"]), payload.get("attachments"), uploads, list(msg["attachments"])
            )
        new["edited_timestamp"] = _now_iso()
        self._compute_mentions(new)
        if self._is_empty(new):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        return new

    def _store_message(self, msg: dict[str, Any]) -> None:
        cid = int(msg["channel_id"])
        self._messages.setdefault(cid, []).append(msg)
        self._message_index[int(msg["id"])] = msg
        if not int(msg["flags"]) & EPHEMERAL:
            channel = self.channels.get(cid)
            if channel is not None:
                channel["last_message_id"] = msg["id"]
                if channel["type"] in THREAD_TYPES:
                    channel["message_count"] += 1
                    channel["total_message_sent"] += 1

    def _delete_message(self, msg: dict[str, Any]) -> None:
        cid = int(msg["channel_id"])
        with contextlib.suppress(ValueError):
            self._messages.get(cid, []).remove(msg)
        self._message_index.pop(int(msg["id"]), None)
        self.deleted_messages.append(msg)

    def _message_intent(self, msg: dict[str, Any]) -> int:
        return Intent.GUILD_MESSAGES if msg.get("guild_id") else Intent.DIRECT_MESSAGES

    async def _announce(self, event: str, msg: dict[str, Any]) -> None:
        if not self.dispatch_message_events or int(msg["flags"]) & EPHEMERAL:
            return
        if event == "MESSAGE_DELETE":
            data: dict[str, Any] = {"id": msg["id"], "channel_id": msg["channel_id"]}
            if msg.get("guild_id"):
                data["guild_id"] = msg["guild_id"]
        else:
            data = self._event_message(msg)
        await self._maybe_dispatch(event, data, self._message_intent(msg))

    # ---------------------------------------------------------------------------------------------------
    # Threads
    # ---------------------------------------------------------------------------------------------------

    def _create_thread(
        self,
        parent_id: int,
        name: str,
        owner_id: int,
        ttype: int,
        auto_archive: int,
        message_id: int | None,
        invitable: bool = True,
        rate_limit: int = 0,
    ) -> dict[str, Any]:
        parent = self.channels[parent_id]
        tid = message_id or self._snowflake()
        now = _now_iso()
        thread: dict[str, Any] = {
            "id": str(tid),
            "type": ttype,
            "guild_id": parent["guild_id"],
            "parent_id": str(parent_id),
            "owner_id": str(owner_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": rate_limit,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "applied_tags": [],
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": auto_archive,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
            },
        }
        if ttype == 12:
            thread["thread_metadata"]["invitable"] = invitable
        self.channels[tid] = thread
        self._messages[tid] = []
        if message_id is not None:
            starter = self.get_message(message_id)
            if starter is not None:
                starter["flags"] = int(starter["flags"]) | HAS_THREAD
                starter["thread"] = copy.deepcopy(thread)
        return thread

    # ---------------------------------------------------------------------------------------------------
    # Route handlers: channels, messages, threads, guilds, DMs
    # ---------------------------------------------------------------------------------------------------

    def _channel(self, channel_id: str | int) -> dict[str, Any]:
        channel = self.channels.get(int(channel_id))
        if channel is None:
            raise DiscordError(404, 10003, "Unknown Channel")
        if not self.permissions_for(self.application_id, int(channel_id)):
            # A channel of a server the bot is not in, or a group DM it is not part of.
            raise DiscordError(403, 50001, "Missing Access")
        return channel

    def _require(self, channel_id: int, perm: int) -> None:
        if self.channels[channel_id].get("guild_id") is None:
            return
        if self.permissions_for(self.application_id, channel_id) & perm != perm:
            raise DiscordError(403, 50013, "Missing Permissions")

    def _channel_message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        msg = self.get_message(int(message_id))
        if msg is None or msg["channel_id"] != str(int(channel_id)) or int(msg["flags"]) & EPHEMERAL:
            raise DiscordError(404, 10008, "Unknown Message")
        return msg

    async def _h_get_channel(self, req: _Request, cid: str) -> web.Response:
        return _json_response(copy.deepcopy(self._channel(cid)))

    async def _h_typing(self, req: _Request, cid: str) -> web.Response:
        self._channel(cid)
        return web.Response(status=204)

    async def _h_list_messages(self, req: _Request, cid: str) -> web.Response:
        self._channel(cid)
        if not self.permissions_for(
            self.application_id, int(cid)
        ) & Perm.READ_MESSAGE_HISTORY and self.channels[int(cid)].get("guild_id"):
            return _json_response([])
        try:
            limit = int(req.query.get("limit", 50))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            errors = _FormErrors()
            errors.add(("limit",), "NUMBER_TYPE_MAX", "int value should be <= 100 and >= 1.")
            errors.raise_if_any()
        msgs = sorted(self.messages(int(cid)), key=lambda m: int(m["id"]), reverse=True)
        if "before" in req.query:
            msgs = [m for m in msgs if int(m["id"]) < int(req.query["before"])]
        if "after" in req.query:
            after = int(req.query["after"])
            msgs = sorted((m for m in msgs if int(m["id"]) > after), key=lambda m: int(m["id"]))[:limit]
            msgs.reverse()
        if "around" in req.query:
            around = int(req.query["around"])
            older = [m for m in msgs if int(m["id"]) <= around][: (limit + 1) // 2]
            newer = [m for m in msgs if int(m["id"]) > around][-(limit // 2) :] if limit // 2 else []
            msgs = newer + older
        return _json_response([self._stored_message(m) for m in msgs[:limit]])

    async def _h_create_message(self, req: _Request, cid: str) -> web.Response:
        channel = self._channel(cid)
        channel_id = int(cid)
        if channel["type"] == 1:
            recipient = int(channel["recipients"][0]["id"])
            if recipient in self.closed_dms:
                raise DiscordError(403, 50007, "Cannot send messages to this user")
        elif channel["type"] in THREAD_TYPES:
            self._require(channel_id, Perm.SEND_MESSAGES_IN_THREADS)
            meta = channel["thread_metadata"]
            moderator = self.permissions_for(self.application_id, channel_id) & Perm.MANAGE_THREADS
            if meta.get("archived") and meta.get("locked") and not moderator:
                raise DiscordError(400, 50083, "Operation cannot be performed on an archived thread.")
            if meta.get("locked") and not moderator:
                raise DiscordError(400, 160005, "Thread is locked")
            if meta.get("archived"):
                meta["archived"] = False  # sending unarchives a thread that is not locked
        else:
            self._require(channel_id, Perm.SEND_MESSAGES)
        if req.uploads:
            self._require(channel_id, Perm.ATTACH_FILES)
        payload = req.json or {}
        self._check_upload_sizes(req.uploads)
        self._validate_message_payload(payload, req.uploads)
        nonce = payload.get("nonce")
        key = (channel_id, self.application_id, str(nonce))
        if nonce is not None and payload.get("enforce_nonce"):
            seen = self._nonces.get(key)
            if seen is not None and time.monotonic() - seen[1] <= self.nonce_window:
                existing = self.get_message(seen[0])
                if existing is not None:
                    return _json_response(self._public_message(existing))
        msg = self._make_message(channel_id, payload, req.uploads)
        self._store_message(msg)
        if nonce is not None:
            self._nonces[key] = (int(msg["id"]), time.monotonic())
        await self._announce("MESSAGE_CREATE", msg)
        return _json_response(self._public_message(msg))

    async def _h_get_message(self, req: _Request, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        self._require(int(cid), Perm.READ_MESSAGE_HISTORY)
        return _json_response(self._stored_message(self._channel_message(cid, mid)))

    async def _h_edit_message(self, req: _Request, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        msg = self._channel_message(cid, mid)
        payload = req.json or {}
        if int(msg["author"]["id"]) != self.application_id:
            if set(payload) - {"flags"}:
                raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
            self._require(int(cid), Perm.MANAGE_MESSAGES)
        self._check_upload_sizes(req.uploads)
        self._validate_message_payload(payload, req.uploads)
        new = self._edited(msg, payload, req.uploads)
        msg.clear()
        msg.update(new)
        await self._announce("MESSAGE_UPDATE", msg)
        return _json_response(self._public_message(msg))

    async def _h_delete_message(self, req: _Request, cid: str, mid: str) -> web.Response:
        self._channel(cid)
        msg = self._channel_message(cid, mid)
        if int(msg["author"]["id"]) != self.application_id:
            self._require(int(cid), Perm.MANAGE_MESSAGES)
        self._delete_message(msg)
        await self._announce("MESSAGE_DELETE", msg)
        return web.Response(status=204)

    async def _h_add_reaction(self, req: _Request, cid: str, mid: str, emoji: str) -> web.Response:
        self._channel(cid)
        self._require(int(cid), Perm.ADD_REACTIONS | Perm.READ_MESSAGE_HISTORY)
        msg = self._channel_message(cid, mid)
        name, _, eid = emoji.partition(":")
        for reaction in msg["reactions"]:
            if reaction["emoji"]["name"] == name:
                if not reaction["me"]:
                    reaction["me"] = True
                    reaction["count"] += 1
                break
        else:
            msg["reactions"].append(
                {"emoji": {"id": eid or None, "name": name}, "count": 1, "me": True, "burst_colors": []}
            )
        return web.Response(status=204)

    async def _h_remove_reaction(self, req: _Request, cid: str, mid: str, emoji: str) -> web.Response:
        self._channel(cid)
        msg = self._channel_message(cid, mid)
        name = emoji.partition(":")[0]
        for reaction in list(msg["reactions"]):
            if reaction["emoji"]["name"] == name and reaction["me"]:
                reaction["me"] = False
                reaction["count"] -= 1
                if reaction["count"] <= 0:
                    msg["reactions"].remove(reaction)
        return web.Response(status=204)

    def _validate_thread_body(self, body: dict[str, Any]) -> tuple[str, int]:
        errors = _FormErrors()
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            errors.add(("name",), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        auto = body.get("auto_archive_duration") or 4320
        if auto not in (60, 1440, 4320, 10080):
            errors.add(
                ("auto_archive_duration",),
                "BASE_TYPE_CHOICES",
                "Value must be one of {60, 1440, 4320, 10080}.",
            )
        errors.raise_if_any()
        return str(name), int(auto)

    async def _h_thread_from_message(self, req: _Request, cid: str, mid: str) -> web.Response:
        channel = self._channel(cid)
        if channel["type"] not in (0, 5):
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        msg = self._channel_message(cid, mid)
        self._require(int(cid), Perm.CREATE_PUBLIC_THREADS)
        if int(msg["flags"]) & HAS_THREAD or int(mid) in self.channels:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        body = req.json or {}
        name, auto = self._validate_thread_body(body)
        thread = self._create_thread(
            int(cid),
            name,
            self.application_id,
            11 if channel["type"] == 0 else 10,
            auto,
            int(mid),
            rate_limit=int(body.get("rate_limit_per_user") or 0),
        )
        await self._maybe_dispatch(
            "THREAD_CREATE", {**copy.deepcopy(thread), "newly_created": True}, Intent.GUILDS
        )
        await self._announce("MESSAGE_UPDATE", msg)
        return _json_response(copy.deepcopy(thread), 201)

    async def _h_thread_without_message(self, req: _Request, cid: str) -> web.Response:
        channel = self._channel(cid)
        if channel["type"] not in (0, 5):
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        body = req.json or {}
        ttype = int(body.get("type") or 12)
        if ttype not in (10, 11, 12):
            raise DiscordError(
                400, 50035, "Invalid Form Body", errors={"type": {"_errors": [{"code": "BASE_TYPE_CHOICES"}]}}
            )
        self._require(int(cid), Perm.CREATE_PRIVATE_THREADS if ttype == 12 else Perm.CREATE_PUBLIC_THREADS)
        name, auto = self._validate_thread_body(body)
        thread = self._create_thread(
            int(cid),
            name,
            self.application_id,
            ttype,
            auto,
            None,
            invitable=bool(body.get("invitable", True)),
            rate_limit=int(body.get("rate_limit_per_user") or 0),
        )
        await self._maybe_dispatch(
            "THREAD_CREATE", {**copy.deepcopy(thread), "newly_created": True}, Intent.GUILDS
        )
        return _json_response(copy.deepcopy(thread), 201)
