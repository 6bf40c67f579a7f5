"""Driving the bot: FakeInteraction, slash, message commands, autocomplete, clicks, modals, user messages."""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ._common import (
    EPHEMERAL,
    SELECT_TYPES,
    Intent,
    Perm,
    _iter_components,
    _Upload,
)
from ._state import FakeState

# What a user-installed app may do where the bot is no member (Discord's app_permissions there).
USER_APP_PERMISSIONS = Perm.ATTACH_FILES | Perm.EMBED_LINKS | Perm.MENTION_EVERYONE | Perm.USE_EXTERNAL_EMOJIS


class FakeInteraction:
    """An interaction the fake dispatched, and everything the bot answered to it."""

    def __init__(self, fake: FakeState, payload: dict[str, Any], user_id: int) -> None:
        self._fake = fake
        self.payload = payload
        self.id: int = int(payload["id"])
        self.token: str = payload["token"]
        self.type: int = payload["type"]
        self.user_id = user_id
        self.channel_id: int = int(payload["channel_id"])
        self.guild_id: int | None = int(payload["guild_id"]) if payload.get("guild_id") else None
        self.dispatched_at: float | None = None
        self.ack_latency: float | None = None
        #: Accepted callbacks:
        #: {"type", "data", "files": [(filename, bytes, content_type)], "latency", "message"}
        self.callbacks: list[dict[str, Any]] = []
        #: Refused callbacks: {"type", "status", "code", "latency"}
        self.rejected_callbacks: list[dict[str, Any]] = []
        #: Snapshots of every message created or edited through the interaction webhook (follow-ups and
        #: @original edits), in order.
        self.followups: list[dict[str, Any]] = []
        self.deleted_message_ids: list[int] = []
        self.original_message_id: int | None = None
        self.source_message_id: int | None = int(payload["message"]["id"]) if payload.get("message") else None
        self._loading = False
        self._webhook_message_ids: set[int] = set()
        #: Webhook calls refused because the token had expired (see `interaction_token_lifetime`).
        self.expired_calls = 0

    def __repr__(self) -> str:
        return (
            f"<FakeInteraction id={self.id} type={self.type} callbacks={[c['type'] for c in self.callbacks]}>"
        )

    @property
    def acked(self) -> bool:
        return bool(self.callbacks)

    @property
    def response_type(self) -> int | None:
        return self.callbacks[0]["type"] if self.callbacks else None

    @property
    def deferred(self) -> bool:
        return self.response_type in (5, 6)

    @property
    def ephemeral(self) -> bool:
        """Whether the initial response (message or deferral) is only visible to the invoking user."""
        if not self.callbacks:
            return False
        cb = self.callbacks[0]
        if cb["type"] in (4, 5):
            return bool(int((cb["data"] or {}).get("flags") or 0) & EPHEMERAL)
        if cb["type"] in (6, 7) and self.source_message_id is not None:
            msg = self._fake.get_message(self.source_message_id)
            return bool(msg and int(msg.get("flags", 0)) & EPHEMERAL)
        return False

    @property
    def created_messages(self) -> list[dict[str, Any]]:
        """The follow-ups the bot posted (webhook POSTs other than the one replacing a deferral), as
        they are stored now."""
        out = []
        for mid in sorted(self._webhook_message_ids):
            msg = self._fake.get_message(mid)
            if msg is not None and mid != self.original_message_id:
                out.append(msg)
        return out

    @property
    def original_message(self) -> dict[str, Any] | None:
        """The live stored original-response message (None if there is none / it was deleted)."""
        if self.original_message_id is None:
            return None
        return self._fake.get_message(self.original_message_id)

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """Autocomplete choices the bot answered with (callback type 8)."""
        for cb in self.callbacks:
            if cb["type"] == 8:
                return list((cb["data"] or {}).get("choices") or [])
        return None

    @property
    def modal(self) -> dict[str, Any] | None:
        """The modal the bot opened (callback type 9 data)."""
        for cb in self.callbacks:
            if cb["type"] == 9:
                return cb["data"]
        return None

    async def wait_acked(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for the first accepted callback and return it."""
        return await self._fake.wait_for(lambda: self.callbacks[0] if self.callbacks else None, timeout)

    async def wait_response(self, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until the user sees an answer and return it.

        Callback 4/7 -> the message snapshot; 8/9 -> the callback data; 5/6 (deferred) -> the first
        follow-up or @original edit.  Times out if the bot only deferred.
        """

        def ready() -> dict[str, Any] | None:
            if not self.callbacks:
                return None
            cb = self.callbacks[0]
            if cb["type"] in (4, 7):
                return cb["message"]
            if cb["type"] in (8, 9):
                return cb["data"]
            return self.followups[0] if self.followups else None

        return await self._fake.wait_for(ready, timeout)

    async def wait_followups(self, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` webhook messages/edits were recorded; returns the list."""
        return await self._fake.wait_for(
            lambda: self.followups if len(self.followups) >= count else None, timeout
        )


class InteractionsMixin(FakeState):
    """Dispatches interactions and user messages to the bot."""

    # ---------------------------------------------------------------------------------------------------
    # Driving the bot: interactions and user messages
    # ---------------------------------------------------------------------------------------------------

    def _base_interaction(
        self,
        itype: int,
        data: dict[str, Any],
        user_id: int,
        channel_id: int,
        *,
        locale: str = "en-US",
        message: dict[str, Any] | None = None,
        installed_by: str | None = None,
    ) -> dict[str, Any]:
        channel = self.channels[channel_id]
        context = self._context_of(channel_id)
        installer = installed_by or self._installer_of(channel_id)
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": str(self._snowflake()),
            "application_id": str(self.application_id),
            "type": itype,
            "token": token,
            "version": 1,
            "data": data,
            "channel_id": str(channel_id),
            "locale": locale,
            "entitlements": self._interaction_entitlements(
                user_id, None if channel.get("guild_id") is None else int(channel["guild_id"])
            ),
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.upload_limit,
        }
        gid = channel.get("guild_id")
        # Who installed the command this interaction runs (Discord: "0" the server -- "0" in the bot's
        # DM --, "1" the user), and what the bot may do there: where it is no member, only what a
        # user-installed app may (its channel requests still answer 403/50001).
        owners = {"1": str(user_id)} if installer == "user" else {"0": str(gid or 0)}
        app_permissions = self.permissions_for(self.application_id, channel_id)
        if not self.bot_is_member(channel_id):
            app_permissions = USER_APP_PERMISSIONS
        if gid is not None:
            gid_int = int(gid)
            ch = self.channel_payload(channel_id)
            ch["permissions"] = str(self.permissions_for(user_id, channel_id))
            guild_locale = self.guilds[gid_int].get("preferred_locale", "en-US")
            payload.update(
                {
                    "guild_id": str(gid_int),
                    "guild": {"id": str(gid_int), "locale": guild_locale, "features": []},
                    "guild_locale": guild_locale,
                    "channel": ch,
                    "member": self.member_payload(user_id, guild_id=gid_int, channel_id=channel_id),
                    "app_permissions": str(app_permissions),
                    "authorizing_integration_owners": owners,
                    "context": context,
                }
            )
        else:
            payload.update(
                {
                    "channel": self._partial_channel(channel_id),
                    "user": self.user_payload(user_id),
                    "app_permissions": str(app_permissions),
                    "authorizing_integration_owners": owners,
                    "context": context,
                }
            )
        if message is not None:
            payload["message"] = message
        return payload

    def _context_of(self, channel_id: int) -> int:
        """Discord's interaction context: 0 a server, 1 the DM with the bot, 2 any other private channel."""
        channel = self.channels[channel_id]
        if channel.get("guild_id") is not None:
            return 0
        return 1 if int(channel["type"]) == 1 else 2

    def _installer_of(self, channel_id: int) -> str:
        """The default installer: the server where the bot is a member, else the user."""
        channel = self.channels[channel_id]
        return "guild" if channel.get("guild_id") is not None and self.bot_is_member(channel_id) else "user"

    def _partial_channel(self, channel_id: int) -> dict[str, Any]:
        """The interaction's partial `channel` outside servers: id, type and, for a group DM, its
        name and recipients (the DM with the bot: the user)."""
        channel = self.channels[channel_id]
        out: dict[str, Any] = {"id": str(channel_id), "type": channel["type"], "flags": 0}
        if "recipients" in channel:
            out["recipients"] = copy.deepcopy(channel["recipients"])
        if int(channel["type"]) == 3:
            out["name"] = channel.get("name")
            out["owner_id"] = channel.get("owner_id")
        return out

    async def _dispatch_interaction(self, payload: dict[str, Any], user_id: int) -> FakeInteraction:
        inter = FakeInteraction(self, payload, user_id)
        self.interactions[inter.id] = inter
        inter.dispatched_at = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return inter

    def _option_payload(
        self,
        name: str,
        value: Any,
        spec: dict[str, Any] | None,
        resolved: dict[str, dict[str, Any]],
        guild_id: int | None,
        channel_id: int,
        *,
        check: bool,
    ) -> dict[str, Any]:
        if spec is not None:
            otype = int(spec["type"])
        elif isinstance(value, bool):
            otype = 5
        elif isinstance(value, int):
            otype = 4
        elif isinstance(value, float):
            otype = 10
        elif isinstance(value, dict) and "filename" in value:
            otype = 11
        else:
            otype = 3
        out: dict[str, Any] = {"name": name, "type": otype}
        if otype == 11:
            att = value if isinstance(value, dict) else self._uploaded_attachments.get(int(value))
            if att is None:
                raise ValueError(f"option {name!r}: unknown attachment {value!r} (use fake.add_attachment)")
            out["value"] = str(att["id"])
            resolved.setdefault("attachments", {})[str(att["id"])] = {
                k: v for k, v in att.items() if k != "data"
            }
        elif otype in (6, 9):
            try:
                uid = self._resolve_user(value)
            except KeyError:
                if otype != 9 or guild_id is None:
                    raise
                rid = self._resolve_role(guild_id, value)
                out["value"] = str(rid)
                resolved.setdefault("roles", {})[str(rid)] = copy.deepcopy(
                    self.guilds[guild_id]["roles"][rid]
                )
            else:
                out["value"] = str(uid)
                resolved.setdefault("users", {})[str(uid)] = self.user_payload(uid)
                if guild_id is not None and uid in self.guilds[guild_id]["members"]:
                    member = self.member_payload(
                        uid, guild_id=guild_id, channel_id=channel_id, with_user=False
                    )
                    resolved.setdefault("members", {})[str(uid)] = member
        elif otype == 7:
            cid = int(value)
            ch = self.channel_payload(cid)
            ch["permissions"] = str(self.permissions_for(self.application_id, cid))
            out["value"] = str(cid)
            resolved.setdefault("channels", {})[str(cid)] = ch
        elif otype == 8:
            assert guild_id is not None
            rid = self._resolve_role(guild_id, value)
            out["value"] = str(rid)
            resolved.setdefault("roles", {})[str(rid)] = copy.deepcopy(self.guilds[guild_id]["roles"][rid])
        elif otype == 4:
            out["value"] = int(value)
        elif otype == 10:
            out["value"] = float(value)
        elif otype == 5:
            out["value"] = bool(value)
        else:
            out["value"] = str(value)
        if check and spec is not None:
            v = out["value"]
            choices = spec.get("choices")
            if choices and v not in [c["value"] for c in choices]:
                raise ValueError(f"option {name!r}: {v!r} is not one of the choices {choices}")
            if otype in (4, 10):
                if spec.get("min_value") is not None and v < spec["min_value"]:
                    raise ValueError(f"option {name!r}: {v} < min_value {spec['min_value']}")
                if spec.get("max_value") is not None and v > spec["max_value"]:
                    raise ValueError(f"option {name!r}: {v} > max_value {spec['max_value']}")
            if otype == 3:
                if spec.get("min_length") is not None and len(v) < spec["min_length"]:
                    raise ValueError(f"option {name!r}: shorter than min_length {spec['min_length']}")
                if spec.get("max_length") is not None and len(v) > spec["max_length"]:
                    raise ValueError(f"option {name!r}: longer than max_length {spec['max_length']}")
        return out

    def _command_data(
        self,
        name: str,
        options: dict[str, Any],
        *,
        user_id: int,
        channel_id: int,
        subcommand: str | None,
        attachments: Iterable[dict[str, Any]],
        focused: str | None = None,
        installed_by: str | None = None,
    ) -> dict[str, Any]:
        channel = self.channels[channel_id]
        guild_id = int(channel["guild_id"]) if channel.get("guild_id") else None
        cmd = self.find_command(name, guild_id or 0)
        data: dict[str, Any] = {"name": name, "type": 1}
        specs: list[dict[str, Any]] | None = None
        if cmd is not None:
            data["id"] = cmd["id"]
            if cmd.get("guild_id"):
                data["guild_id"] = cmd["guild_id"]
            specs = cmd.get("options") or []
            if self.enforce_command_permissions:
                self._check_command_visible(cmd, user_id, channel_id, installed_by)
        else:
            data["id"] = str(self._snowflake())
        chain: list[tuple[str, int]] = []
        if subcommand:
            parts = subcommand.split()
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                spec = None
                if specs is not None:
                    spec = next((o for o in specs if o["name"] == part and o["type"] in (1, 2)), None)
                    if spec is None:
                        raise ValueError(f"/{name} has no subcommand (group) {part!r}")
                chain.append((part, spec["type"] if spec else (1 if last else 2)))
                specs = (spec.get("options") or []) if spec is not None else None
        resolved: dict[str, dict[str, Any]] = {}
        built: list[dict[str, Any]] = []
        check = focused is None
        for opt_name, value in options.items():
            if value is None:
                continue
            spec = None
            if specs is not None:
                spec = next((o for o in specs if o["name"] == opt_name), None)
                if spec is None:
                    raise ValueError(
                        f"/{name}: unknown option {opt_name!r}; synced: {[o['name'] for o in specs]}"
                    )
            if opt_name == focused:
                opt = {
                    "name": opt_name,
                    "type": spec["type"] if spec else 3,
                    "value": str(value),
                    "focused": True,
                }
            else:
                opt = self._option_payload(opt_name, value, spec, resolved, guild_id, channel_id, check=check)
            built.append(opt)
        if focused is not None and focused not in options:
            spec = next((o for o in specs or [] if o["name"] == focused), None)
            built.append({"name": focused, "type": spec["type"] if spec else 3, "value": "", "focused": True})
        if check and specs is not None:
            missing = [o["name"] for o in specs if o.get("required") and o["name"] not in options]
            if missing:
                raise ValueError(f"/{name}: missing required option(s) {missing}")
        for att in attachments:
            resolved.setdefault("attachments", {})[str(att["id"])] = {
                k: v for k, v in att.items() if k != "data"
            }
        for sub_name, sub_type in reversed(chain):
            built = [{"name": sub_name, "type": sub_type, "options": built}]
        if built:
            data["options"] = built
        if resolved:
            data["resolved"] = resolved
        return data

    def _check_command_visible(
        self, cmd: dict[str, Any], user_id: int, channel_id: int, installed_by: str | None = None
    ) -> None:
        channel = self.channels[channel_id]
        in_guild = channel.get("guild_id") is not None
        context = self._context_of(channel_id)
        installer = installed_by or self._installer_of(channel_id)
        types = cmd.get("integration_types") or [0]
        if (1 if installer == "user" else 0) not in types:
            raise PermissionError(
                f"/{cmd['name']} cannot be installed by a {installer} (integration_types={types})"
            )
        # Unset contexts: a server install runs in servers and the bot DM; a user install everywhere.
        contexts = cmd.get("contexts")
        if contexts is None:
            contexts = [0, 1, 2] if installer == "user" else [0, 1]
        if context not in contexts:
            raise PermissionError(
                f"/{cmd['name']} is not available in context {context} (contexts={contexts})"
            )
        if not in_guild and cmd.get("dm_permission") is False:
            raise PermissionError(f"/{cmd['name']} is not available in DMs")
        required = cmd.get("default_member_permissions")
        if in_guild and required is not None:
            perms = self.permissions_for(user_id, channel_id)
            if int(required) & perms != int(required) and not perms & Perm.ADMINISTRATOR:
                raise PermissionError(
                    f"/{cmd['name']} requires permissions {required}; the Discord client would not show it "
                    f"to this user (set fake.enforce_command_permissions = False to bypass)"
                )

    async def slash(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user: str | int = "alice",
        channel_id: int | None = None,
        attachments: Sequence[dict[str, Any]] = (),
        subcommand: str | None = None,
        locale: str = "en-US",
        installed_by: str | None = None,
    ) -> FakeInteraction:
        """Dispatch an APPLICATION_COMMAND (type 2) interaction, as if ``user`` ran ``/name``.
        ``installed_by`` ("guild" or "user"; default: the server where the bot is a member, else the
        user) is who installed the command: it sets `authorizing_integration_owners` and must be one of
        the command's `integration_types`. The context follows the channel (server, bot DM, group DM)."""
        uid = self._resolve_user(user)
        cid = channel_id or self.channel_id
        data = self._command_data(
            name,
            options or {},
            user_id=uid,
            channel_id=cid,
            subcommand=subcommand,
            attachments=attachments,
            installed_by=installed_by,
        )
        payload = self._base_interaction(2, data, uid, cid, locale=locale, installed_by=installed_by)
        return await self._dispatch_interaction(payload, uid)

    async def message_command(
        self,
        name: str,
        message_id: int,
        *,
        user: str | int = "alice",
        locale: str = "en-US",
        installed_by: str | None = None,
    ) -> FakeInteraction:
        """Dispatch a MESSAGE context-menu command (application command type 3) on a stored message."""
        uid = self._resolve_user(user)
        msg = self.get_message(message_id)
        if msg is None:
            raise LookupError(f"no stored message {message_id}")
        cid = int(msg["channel_id"])
        channel = self.channels[cid]
        gid = int(channel["guild_id"]) if channel.get("guild_id") else 0
        cmd = next(
            (
                c
                for c in [*self.guild_commands.get(gid, []), *self.global_commands]
                if c["name"] == name and c.get("type") == 3
            ),
            None,
        )
        if cmd is None:
            raise ValueError(f"no message command {name!r} was synced")
        if self.enforce_command_permissions:
            self._check_command_visible(cmd, uid, cid, installed_by)
        data = {
            "id": cmd["id"],
            "name": name,
            "type": 3,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): self._public_message(msg)}},
        }
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        payload = self._base_interaction(2, data, uid, cid, locale=locale, installed_by=installed_by)
        return await self._dispatch_interaction(payload, uid)

    async def autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        user: str | int = "alice",
        channel_id: int | None = None,
        subcommand: str | None = None,
    ) -> FakeInteraction:
        """Dispatch an APPLICATION_COMMAND_AUTOCOMPLETE (type 4) interaction; read ``.choices`` after."""
        uid = self._resolve_user(user)
        cid = channel_id or self.channel_id
        data = self._command_data(
            name, options, user_id=uid, channel_id=cid, subcommand=subcommand, attachments=(), focused=focused
        )
        payload = self._base_interaction(4, data, uid, cid)
        return await self._dispatch_interaction(payload, uid)

    async def click(
        self,
        message_id: int,
        custom_id: str,
        *,
        user: str | int = "alice",
        channel_id: int | None = None,
        values: Sequence[str] | None = None,
        locale: str = "en-US",
    ) -> FakeInteraction:
        """Dispatch a MESSAGE_COMPONENT (type 3) interaction for a button (or select, with ``values``) of a
        stored message, from a client set to ``locale``.  Raises if the message has no such enabled
        component."""
        uid = self._resolve_user(user)
        msg = self.get_message(message_id)
        if msg is None:
            raise LookupError(f"no stored message {message_id}")
        comp = next(
            (c for c in _iter_components(msg.get("components")) if c.get("custom_id") == custom_id), None
        )
        if comp is None:
            ids = [c.get("custom_id") for c in _iter_components(msg.get("components")) if c.get("custom_id")]
            raise ValueError(f"message {message_id} has no component {custom_id!r}; it has {ids}")
        if comp.get("disabled"):
            raise ValueError(f"component {custom_id!r} is disabled; users cannot click it")
        ctype = int(comp["type"])
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": ctype}
        if comp.get("id") is not None:
            data["id"] = comp["id"]
        if ctype in SELECT_TYPES:
            data["values"] = list(values or [])
        cid = channel_id or int(msg["channel_id"])
        payload = self._base_interaction(3, data, uid, cid, locale=locale, message=self._public_message(msg))
        return await self._dispatch_interaction(payload, uid)

    async def click_forged(
        self, message_id: int, custom_id: str, *, user: str | int = "alice", component_type: int = 2
    ) -> FakeInteraction:
        """A component interaction with a custom_id the message does not carry -- what a modified client
        can send. Discord itself does not validate custom_ids, so neither does this."""
        uid = self._resolve_user(user)
        msg = self.get_message(message_id)
        if msg is None:
            raise LookupError(f"no stored message {message_id}")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        payload = self._base_interaction(
            3, data, uid, int(msg["channel_id"]), message=self._public_message(msg)
        )
        return await self._dispatch_interaction(payload, uid)

    async def submit_modal(
        self, source: FakeInteraction, values: dict[str, Any], *, user: str | int | None = None
    ) -> FakeInteraction:
        """Submit the modal the bot opened in answer to ``source`` (type 5), from the same client (and
        so the same ``locale``).  ``values`` maps input custom_id -> text (or list of values for selects)."""
        modal = source.modal
        if modal is None:
            raise ValueError(f"{source!r} did not answer with a modal")
        uid = self._resolve_user(user) if user is not None else source.user_id

        def convert(comp: dict[str, Any]) -> dict[str, Any] | None:
            ctype = comp.get("type")
            if ctype == 1:
                kids = [c for c in (convert(x) for x in comp.get("components") or []) if c is not None]
                return {"type": 1, "components": kids}
            if ctype == 18:
                inner = convert(comp.get("component") or {})
                out18: dict[str, Any] = {"type": 18, "component": inner}
                if comp.get("id") is not None:
                    out18["id"] = comp["id"]
                return out18
            cid = comp.get("custom_id")
            if cid is None:
                return None
            out: dict[str, Any] = {"type": ctype, "custom_id": cid}
            if comp.get("id") is not None:
                out["id"] = comp["id"]
            if ctype == 4:
                out["value"] = str(values.get(cid, comp.get("value") or ""))
            else:
                val = values.get(cid, [])
                out["values"] = list(val) if isinstance(val, list | tuple) else [val]
            return out

        components = [c for c in (convert(x) for x in modal.get("components") or []) if c is not None]
        data = {"custom_id": modal["custom_id"], "components": components}
        message = None
        if source.type == 3 and source.source_message_id is not None:
            src = self.get_message(source.source_message_id)
            message = self._public_message(src) if src else None
        locale = str(source.payload.get("locale") or "en-US")
        payload = self._base_interaction(5, data, uid, source.channel_id, locale=locale, message=message)
        return await self._dispatch_interaction(payload, uid)

    async def post_user_message(
        self,
        content: str,
        *,
        user: str | int = "alice",
        channel_id: int | None = None,
        files: Sequence[tuple[str, bytes, str]] = (),
    ) -> dict[str, Any]:
        """A user posts a message, optionally with files as (filename, data, content_type) (dispatches
        MESSAGE_CREATE; content is blanked like real Discord when the bot lacks the MESSAGE_CONTENT
        intent and is not mentioned)."""
        uid = self._resolve_user(user)
        cid = channel_id or self.channel_id
        uploads = [_Upload(f"files[{i}]", name, data, ctype) for i, (name, data, ctype) in enumerate(files)]
        payload: dict[str, Any] = {"content": content}
        if uploads:
            payload["attachments"] = [{"id": i, "filename": u.filename} for i, u in enumerate(uploads)]
        msg = self._make_message(cid, payload, uploads, author_id=uid)
        self._store_message(msg)
        event = self._event_message(msg)
        session = self._session
        if session is not None and not session.intents & Intent.MESSAGE_CONTENT:
            mentioned = any(int(u["id"]) == self.application_id for u in msg["mentions"])
            if msg.get("guild_id") and not mentioned:
                event.update(content="", embeds=[], attachments=[], components=[])
        intent = Intent.GUILD_MESSAGES if msg.get("guild_id") else Intent.DIRECT_MESSAGES
        await self._maybe_dispatch("MESSAGE_CREATE", event, intent)
        return msg
