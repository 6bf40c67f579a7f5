"""Payload builders: users, members, channels, guilds, the application and messages as Discord sends them."""

from __future__ import annotations

import copy
import hashlib
import time
from typing import Any
from urllib.parse import quote

from ._common import (
    Intent,
)
from ._state import FakeState


class PayloadsMixin(FakeState):
    """Discord-shaped payloads built from the fake's state."""

    # ---------------------------------------------------------------------------------------------------
    # Payload builders (public: tests may use them to dispatch events)
    # ---------------------------------------------------------------------------------------------------

    def user_payload(self, user: str | int) -> dict[str, Any]:
        return copy.deepcopy(self.users[self._resolve_user(user)])

    def member_payload(
        self,
        user: str | int,
        *,
        guild_id: int | None = None,
        channel_id: int | None = None,
        with_user: bool = True,
    ) -> dict[str, Any]:
        gid = guild_id or self.guild_id
        uid = self._resolve_user(user)
        member = self.guilds[gid]["members"][uid]
        out: dict[str, Any] = {
            "roles": [str(r) for r in member["roles"]],
            "nick": member["nick"],
            "avatar": None,
            "banner": None,
            "joined_at": member["joined_at"],
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            out["user"] = self.user_payload(uid)
        if channel_id is not None:
            out["permissions"] = str(self.permissions_for(uid, channel_id))
        return out

    def channel_payload(self, channel_id: int) -> dict[str, Any]:
        return copy.deepcopy(self.channels[channel_id])

    def guild_payload(self, guild_id: int | None = None, *, full: bool = False) -> dict[str, Any]:
        gid = guild_id or self.guild_id
        g = self.guilds[gid]
        out: dict[str, Any] = {
            "id": str(gid),
            "name": g["name"],
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "owner_id": str(g["owner_id"]),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": copy.deepcopy(list(g["roles"].values())),
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "description": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": g.get("preferred_locale", "en-US"),
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }
        if full:
            channels = [self.channel_payload(c) for c in g["channel_ids"]]
            threads = [
                copy.deepcopy(t)
                for t in self.threads.values()
                if int(t["guild_id"]) == gid and not t["thread_metadata"]["archived"]
            ]
            out.update(
                {
                    "joined_at": g["joined_at"],
                    "large": False,
                    "unavailable": False,
                    "member_count": len(g["members"]),
                    "voice_states": [],
                    "members": [self.member_payload(uid, guild_id=gid) for uid in g["members"]],
                    "channels": channels,
                    "threads": threads,
                    "presences": [],
                    "stage_instances": [],
                    "guild_scheduled_events": [],
                    "soundboard_sounds": [],
                }
            )
        return out

    def application_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_user["username"],
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "bot": copy.deepcopy(self.bot_user),
            "owner": self.user_payload("owner"),
            "team": None,
            "verify_key": hashlib.sha256(str(self.application_id).encode()).hexdigest(),
            "flags": self._application_flags(),
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "approximate_guild_count": len(self.guilds),
            "integration_types_config": {"0": {}},
            "hook": True,
        }

    def _application_flags(self) -> int:
        flags = 0
        if self.enabled_privileged_intents & Intent.GUILD_PRESENCES:
            flags |= 1 << 13
        if self.enabled_privileged_intents & Intent.GUILD_MEMBERS:
            flags |= 1 << 15
        if self.enabled_privileged_intents & Intent.MESSAGE_CONTENT:
            flags |= 1 << 19
        return flags

    def _public_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        out = {k: copy.deepcopy(v) for k, v in msg.items() if k not in ("allowed_mentions", "attachments")}
        out["attachments"] = [{k: v for k, v in a.items() if k != "data"} for a in msg["attachments"]]
        return out

    def _stored_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A message as reading it back returns it: Discord does not keep the nonce."""
        out = self._public_message(msg)
        out.pop("nonce", None)
        return out

    def _event_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        out = self._public_message(msg)
        if msg.get("guild_id"):
            author_id = int(msg["author"]["id"])
            gid = int(msg["guild_id"])
            if author_id in self.guilds[gid]["members"]:
                out["member"] = self.member_payload(author_id, guild_id=gid, with_user=False)
        return out

    def _cdn_url(self, path: str, *, proxy: bool = False) -> str:
        now = int(time.time())
        sig = hashlib.sha256(f"{path}{now}".encode()).hexdigest()
        base = f"{self.url}/media" if proxy else self.url
        return f"{base}{quote(path)}?ex={now + 86400:x}&is={now:x}&hm={sig}&"

    def _require_started(self) -> None:
        if not self.url:
            raise RuntimeError("FakeDiscord.start() has not been called")
