"""World state: users, guilds, roles, members, channels, threads, attachments, DMs, and queries on them."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from ._common import (
    EPHEMERAL,
    THREAD_TYPES,
    Perm,
    _attachment_flags,
    _image_size,
    _now_iso,
    _sanitize_filename,
)
from ._state import FakeState


class WorldMixin(FakeState):
    """Builds and queries the fake's world (state only: events are the test's to send)."""

    # ---------------------------------------------------------------------------------------------------
    # Resolving names
    # ---------------------------------------------------------------------------------------------------

    def _resolve_user(self, user: str | int) -> int:
        if isinstance(user, int):
            if user not in self.users:
                raise KeyError(f"unknown user id {user}")
            return user
        try:
            return self.user_ids[user]
        except KeyError:
            raise KeyError(f"unknown user {user!r}; known: {sorted(self.user_ids)}") from None

    def _resolve_role(self, guild_id: int, role: str | int) -> int:
        guild = self.guilds[guild_id]
        if isinstance(role, int):
            if role not in guild["roles"]:
                raise KeyError(f"unknown role id {role}")
            return role
        if role in ("everyone", "@everyone"):
            return guild_id
        for rid, r in guild["roles"].items():
            if r["name"].lower() == role.lower():
                return rid
        if guild_id == self.guild_id and role in getattr(self, "role_ids", {}):
            return self.role_ids[role]
        raise KeyError(f"unknown role {role!r}")

    # ---------------------------------------------------------------------------------------------------
    # World building
    # ---------------------------------------------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False, global_name: str | None = None) -> int:
        if name in self.user_ids:
            return self.user_ids[name]
        uid = self._snowflake()
        self.users[uid] = {
            "id": str(uid),
            "username": name,
            "global_name": global_name or name.capitalize(),
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }
        self.user_ids[name] = uid
        return uid

    def _snowflake_on_shard(self, shard_id: int, shard_count: int) -> int:
        """A fresh snowflake whose guild would live on ``shard_id`` of ``shard_count``: the shard is
        taken from the timestamp bits (``id >> 22``), so move the timestamp up by < count ms."""
        if not 0 <= shard_id < shard_count:
            raise ValueError(f"shard {shard_id} is not one of {shard_count} shards")
        base = self._snowflake()
        ms = base >> 22
        ms += (shard_id - ms) % shard_count
        value = max(base, ms << 22)
        self._last_snowflake = value
        return value

    def add_guild(
        self,
        name: str,
        *,
        owner: str | int = "owner",
        preferred_locale: str = "en-US",
        shard: tuple[int, int] | None = None,
        with_bot: bool = True,
    ) -> int:
        """A guild (only the fake's state); ``shard=(id, count)`` picks an id that lands on that shard.
        ``with_bot=False``: a server that did not add the bot -- the bot is no member (no GUILD_CREATE,
        its channel requests answer 403/50001), only a user-installed command runs there."""
        gid = self._snowflake() if shard is None else self._snowflake_on_shard(*shard)
        owner_id = self._resolve_user(owner) if not isinstance(owner, str) else self.add_user(owner)
        self.guilds[gid] = {
            "id": gid,
            "name": name,
            "owner_id": owner_id,
            "preferred_locale": preferred_locale,
            "roles": {},
            "members": {},
            "channel_ids": [],
            "joined_at": _now_iso(),
            "bot_role_id": 0,
        }
        self._add_role_raw(gid, gid, "@everyone", Perm.EVERYONE_DEFAULT)
        bot_role = self._add_role_raw(gid, self._snowflake(), "AnimateBot", Perm.BOT_DEFAULT, managed=True)
        self.guilds[gid]["bot_role_id"] = bot_role
        if with_bot:
            self.add_member(self.application_id, roles=[bot_role], guild_id=gid)
        self.add_member(owner_id, guild_id=gid)
        return gid

    def open_dm(self, user: str | int) -> int:
        """The DM channel between ``user`` and the bot (created like ``POST /users/@me/channels``)."""
        uid = self._resolve_user(user)
        cid = self._dm_channels.get(uid)
        if cid is None:
            cid = self._snowflake()
            self.channels[cid] = {
                "id": str(cid),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [self.user_payload(uid)],
            }
            self._messages[cid] = []
            self._dm_channels[uid] = cid
        return cid

    def add_group_dm(self, users: Sequence[str | int], *, name: str | None = None) -> int:
        """A group DM between users (type 3). The bot is not in it: it can neither post nor read there
        (403/50001); only a user-installed command answers, through its interaction."""
        uids = [self._resolve_user(u) for u in users]
        cid = self._snowflake()
        self.channels[cid] = {
            "id": str(cid),
            "type": 3,
            "name": name,
            "last_message_id": None,
            "flags": 0,
            "owner_id": str(uids[0]),
            "recipients": [self.user_payload(u) for u in uids],
        }
        self._messages[cid] = []
        return cid

    def bot_is_member(self, channel_id: int) -> bool:
        """Whether the bot is in the channel's server, or is the DM's other side."""
        channel = self.channels[channel_id]
        if channel.get("guild_id") is not None:
            return self.application_id in self.guilds[int(channel["guild_id"])]["members"]
        return int(channel["type"]) == 1

    def set_guild_locale(self, locale: str, guild_id: int | None = None) -> None:
        """The guild's preferred locale (Server Settings > Community > Server Primary Language): sent as
        `preferred_locale` in guild payloads and as `guild_locale` on every interaction from the guild.
        Only changes the fake's state (dispatch GUILD_UPDATE yourself if the bot should see it)."""
        self.guilds[guild_id or self.guild_id]["preferred_locale"] = locale

    def _add_role_raw(self, gid: int, rid: int, name: str, permissions: int, *, managed: bool = False) -> int:
        roles = self.guilds[gid]["roles"]
        role: dict[str, Any] = {
            "id": str(rid),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": len(roles),
            "permissions": str(permissions),
            "managed": managed,
            "mentionable": False,
            "flags": 0,
        }
        if managed:
            role["tags"] = {"bot_id": str(self.application_id)}
        roles[rid] = role
        return rid

    def add_role(self, name: str, permissions: int, *, guild_id: int | None = None) -> int:
        return self._add_role_raw(guild_id or self.guild_id, self._snowflake(), name, permissions)

    def add_member(
        self,
        user: str | int,
        *,
        roles: Sequence[str | int] = (),
        guild_id: int | None = None,
        nick: str | None = None,
    ) -> int:
        """Add a member (creating the user when ``user`` is an unknown name); returns the user id."""
        gid = guild_id or self.guild_id
        uid = self.add_user(user) if isinstance(user, str) else self._resolve_user(user)
        self.guilds[gid]["members"][uid] = {
            "roles": [self._resolve_role(gid, r) for r in roles],
            "nick": nick,
            "joined_at": _now_iso(),
        }
        return uid

    def add_channel(
        self,
        name: str,
        *,
        guild_id: int | None = None,
        type: int = 0,
        topic: str | None = None,
        overwrites: Sequence[dict[str, Any]] = (),
        parent_id: int | None = None,
        nsfw: bool = False,
        rate_limit_per_user: int = 0,
    ) -> int:
        """Add a guild channel.  ``overwrites`` entries: {"id": role/user name or id, "allow": int,
        "deny": int, "type": 0 role / 1 member (optional when id is a name)}."""
        gid = guild_id or self.guild_id
        cid = self._snowflake()
        guild = self.guilds[gid]
        channel: dict[str, Any] = {
            "id": str(cid),
            "type": type,
            "guild_id": str(gid),
            "name": name,
            "position": len(guild["channel_ids"]),
            "permission_overwrites": [],
            "nsfw": nsfw,
            "parent_id": str(parent_id) if parent_id else None,
            "topic": topic,
            "last_message_id": None,
            "rate_limit_per_user": rate_limit_per_user,
            "flags": 0,
            "last_pin_timestamp": None,
        }
        self.channels[cid] = channel
        guild["channel_ids"].append(cid)
        self._messages[cid] = []
        for ow in overwrites:
            self.set_overwrite(
                cid, ow["id"], allow=ow.get("allow", 0), deny=ow.get("deny", 0), type=ow.get("type")
            )
        return cid

    def set_overwrite(
        self, channel_id: int, target: str | int, *, allow: int = 0, deny: int = 0, type: int | None = None
    ) -> None:
        """Set (replace) a permission overwrite on a channel.  ``target``: role/user name or id."""
        channel = self.channels[channel_id]
        gid = int(channel["guild_id"])
        guild = self.guilds[gid]
        if type is None:
            if isinstance(target, str):
                try:
                    tid, type = self._resolve_role(gid, target), 0
                except KeyError:
                    tid, type = self._resolve_user(target), 1
            else:
                tid, type = target, (0 if target in guild["roles"] else 1)
        else:
            tid = (
                (self._resolve_role(gid, target) if type == 0 else self._resolve_user(target))
                if isinstance(target, str)
                else target
            )
        ows = [o for o in channel["permission_overwrites"] if int(o["id"]) != tid]
        ows.append({"id": str(tid), "type": type, "allow": str(allow), "deny": str(deny)})
        channel["permission_overwrites"] = ows

    def add_thread(
        self,
        parent_id: int,
        name: str,
        *,
        owner: str | int = "alice",
        type: int = 11,
        message_id: int | None = None,
        archived: bool = False,
        locked: bool = False,
    ) -> int:
        """Create a thread (as a user would); dispatch THREAD_CREATE yourself if the bot is connected."""
        thread = self._create_thread(parent_id, name, self._resolve_user(owner), type, 1440, message_id)
        thread["thread_metadata"]["archived"] = archived
        thread["thread_metadata"]["locked"] = locked
        return int(thread["id"])

    async def set_thread_state(
        self, thread_id: int, *, archived: bool | None = None, locked: bool | None = None
    ) -> None:
        """A moderator archives and/or locks a thread (THREAD_UPDATE is dispatched).  Posting in an
        archived, locked thread then answers 400 / 50083; in a locked one 400 / 160005 (unless the bot has
        Manage Threads); an archived, unlocked one is unarchived by the post, as on Discord."""
        thread = self.channels[int(thread_id)]
        meta = thread["thread_metadata"]
        if archived is not None:
            meta["archived"] = archived
            meta["archive_timestamp"] = _now_iso()
        if locked is not None:
            meta["locked"] = locked
        if self.connected:
            await self.dispatch("THREAD_UPDATE", copy.deepcopy(thread))

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str,
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Store bytes on the fake CDN as a user upload (for attachment options); returns the attachment
        object (id, filename, size, url, proxy_url, content_type, width, height, ephemeral)."""
        self._require_started()
        aid = self._snowflake()
        fname = _sanitize_filename(filename)
        path = f"/ephemeral-attachments/{self.channel_id}/{aid}/{fname}"
        self._cdn[path] = (data, content_type)
        if width is None and height is None:
            width, height = _image_size(data, content_type)
        att = {
            "id": str(aid),
            "filename": fname,
            "size": len(data),
            "url": self._cdn_url(path),
            "proxy_url": self._cdn_url(path, proxy=True),
            "content_type": content_type,
            "width": width,
            "height": height,
            "ephemeral": True,
            "flags": _attachment_flags(fname),
        }
        self._uploaded_attachments[aid] = att
        return copy.deepcopy(att)

    def close_dms(self, user: str | int) -> None:
        """The user blocks DMs: messages to their DM channel answer 403 / 50007."""
        self.closed_dms.add(self._resolve_user(user))

    def dm_channel_id(self, user: str | int) -> int | None:
        return self._dm_channels.get(self._resolve_user(user))

    # ---------------------------------------------------------------------------------------------------
    # Queries
    # ---------------------------------------------------------------------------------------------------

    def messages(
        self, channel_id: int | None = None, *, include_ephemeral: bool = False
    ) -> list[dict[str, Any]]:
        """Live stored messages of a channel (oldest first).  Attachments carry their bytes under "data";
        "allowed_mentions" is what the bot sent.  Ephemeral messages are left out unless asked for."""
        cid = channel_id or self.channel_id
        msgs = self._messages.get(cid, [])
        if include_ephemeral:
            return list(msgs)
        return [m for m in msgs if not int(m.get("flags", 0)) & EPHEMERAL]

    def get_message(self, message_id: int) -> dict[str, Any] | None:
        return self._message_index.get(int(message_id))

    async def user_deletes_message(self, message_id: int) -> None:
        """A moderator deletes a message (MESSAGE_DELETE is dispatched, as Discord does)."""
        msg = self._message_index[int(message_id)]
        self._delete_message(msg)
        await self._announce("MESSAGE_DELETE", msg)

    async def user_deletes_channel(self, channel_id: int) -> None:
        """A moderator deletes a channel or thread: later requests for it answer 404 Unknown Channel."""
        channel = self.channels.pop(int(channel_id))
        event = "THREAD_DELETE" if channel["type"] in THREAD_TYPES else "CHANNEL_DELETE"
        await self.dispatch(event, channel)

    @property
    def threads(self) -> dict[int, dict[str, Any]]:
        return {cid: ch for cid, ch in self.channels.items() if ch["type"] in THREAD_TYPES}

    def find_command(self, name: str, guild_id: int | None = None) -> dict[str, Any] | None:
        """A synced chat-input command by name: commands of ``guild_id`` (default guild when None; pass 0
        for "no guild", e.g. DMs) first, then global ones."""
        gid = self.guild_id if guild_id is None else guild_id
        for cmd in self.guild_commands.get(gid, []):
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        for cmd in self.global_commands:
            if cmd["name"] == name and cmd.get("type", 1) == 1:
                return cmd
        return None

    def permissions_for(self, user: str | int, channel_id: int) -> int:
        """Effective permissions of a member in a channel (roles + overwrites, Discord's algorithm)."""
        uid = self._resolve_user(user)
        channel = self.channels[channel_id]
        if channel.get("guild_id") is None:
            members = {int(r["id"]) for r in channel.get("recipients", [])}
            if int(channel["type"]) == 3 and uid not in members:
                return 0  # a group DM the bot (or this user) is not in
            return Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES | Perm.READ_MESSAGE_HISTORY | Perm.ATTACH_FILES
        gid = int(channel["guild_id"])
        guild = self.guilds[gid]
        if uid == guild["owner_id"]:
            return Perm.ALL
        member = guild["members"].get(uid)
        if member is None:
            return 0
        base = int(guild["roles"][gid]["permissions"])
        for rid in member["roles"]:
            base |= int(guild["roles"][rid]["permissions"])
        if base & Perm.ADMINISTRATOR:
            return Perm.ALL
        target = channel
        if channel["type"] in THREAD_TYPES:
            target = self.channels[int(channel["parent_id"])]
        ows = {int(o["id"]): o for o in target.get("permission_overwrites", [])}
        perms = base
        if gid in ows:
            perms = (perms & ~int(ows[gid]["deny"])) | int(ows[gid]["allow"])
        allow = deny = 0
        for rid in member["roles"]:
            if rid in ows:
                allow |= int(ows[rid]["allow"])
                deny |= int(ows[rid]["deny"])
        perms = (perms & ~deny) | allow
        if uid in ows and ows[uid]["type"] == 1:
            perms = (perms & ~int(ows[uid]["deny"])) | int(ows[uid]["allow"])
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        if not perms & Perm.SEND_MESSAGES and channel["type"] not in THREAD_TYPES:
            perms &= ~(Perm.SEND_TTS_MESSAGES | Perm.MENTION_EVERYONE | Perm.EMBED_LINKS | Perm.ATTACH_FILES)
        return perms
