"""The gateway: websocket, HELLO/IDENTIFY/RESUME, shards, dispatch, reconnects and member chunks."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import secrets
from typing import Any

from aiohttp import WSMsgType, web

from ._common import (
    API_VERSION,
    GUILD_EVENTS,
    Intent,
    shard_of,
)
from ._state import FakeState


class _Conn:
    """One gateway websocket connection."""

    def __init__(self, ws: web.WebSocketResponse, query: dict[str, str]) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()
        self.info: dict[str, Any] = {
            "query": query,
            "identified": False,
            "resumed": False,
            "close_code": None,
            "heartbeats": 0,
            "shard": None,  # [id, count] once identified
            "events": [],  # (event name, guild id or None) of every DISPATCH sent on this connection
        }

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_str(json.dumps(frame))


class _Session:
    def __init__(self, session_id: str, intents: int, shard: list[int] | None) -> None:
        self.session_id = session_id
        self.intents = intents
        self.shard = shard
        # An IDENTIFY without `shard` is shard 0 of 1: it receives every guild.
        self.shard_id, self.shard_count = (shard[0], shard[1]) if shard is not None else (0, 1)
        self.seq = 0
        self.sent: list[dict[str, Any]] = []
        self.conn: _Conn | None = None

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.ws.closed


class GatewayMixin(FakeState):
    """The gateway side of the fake."""

    # ---------------------------------------------------------------------------------------------------
    # Gateway
    # ---------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.connected

    @property
    def connected_shards(self) -> dict[int, int]:
        """Shard id -> shard count of every shard with a connected session."""
        return {sid: s.shard_count for sid, s in self._shard_sessions.items() if s.connected}

    @staticmethod
    def event_guild_id(event: str, data: dict[str, Any]) -> int | None:
        """The guild an event belongs to (None: not guild-scoped, e.g. a DM interaction)."""
        raw = data.get("id") if event in GUILD_EVENTS else data.get("guild_id")
        return int(raw) if raw is not None else None

    def _sessions_for(self, event: str, data: dict[str, Any]) -> list[_Session]:
        """The connected sessions that receive ``event``: the shard ``(guild_id >> 22) % count`` of
        each session's shard count (shard 0 for events without a guild), as Discord routes them."""
        gid = self.event_guild_id(event, data)
        return [
            s
            for s in self._shard_sessions.values()
            if s.connected and s.shard_id == shard_of(gid, s.shard_count)
        ]

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send a DISPATCH (op 0) event to the shard that owns it (see ``_sessions_for``); returns its
        sequence number there."""
        sessions = self._sessions_for(event, data)
        if not sessions:
            gid = self.event_guild_id(event, data)
            where = f" for the shard of guild {gid}" if gid is not None else " on shard 0"
            raise RuntimeError(f"no bot is connected to the fake gateway{where}")
        seq = 0
        for session in sessions:
            seq = await self._session_dispatch(session, event, data)
        return seq

    async def _session_dispatch(self, session: _Session, event: str, data: dict[str, Any]) -> int:
        assert session.conn is not None
        conn = session.conn
        async with conn.lock:
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.sent.append(frame)
            self.dispatched.append(frame)
            conn.info["events"].append((event, self.event_guild_id(event, data)))
            await conn.ws.send_str(json.dumps(frame))
            return session.seq

    async def _maybe_dispatch(self, event: str, data: dict[str, Any], intent: int) -> None:
        for session in self._sessions_for(event, data):
            if session.intents & intent:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self._session_dispatch(session, event, data)

    async def dispatch_guild_create(self, guild_id: int) -> None:
        await self.dispatch("GUILD_CREATE", self.guild_payload(guild_id, full=True))

    async def remove_guild(self, guild_id: int, *, unavailable: bool = False) -> None:
        """Dispatch GUILD_DELETE (kicked when unavailable is False, outage otherwise)."""
        data: dict[str, Any] = {"id": str(guild_id)}
        if unavailable:
            data["unavailable"] = True
        await self.dispatch("GUILD_DELETE", data)

    def _pick_session(self, shard: int | None) -> _Session | None:
        return self._session if shard is None else self._shard_sessions.get(shard)

    async def request_reconnect(self, *, shard: int | None = None) -> None:
        """Send op 7 RECONNECT (to ``shard``, default the newest session): the client should reconnect
        and RESUME."""
        session = self._pick_session(shard)
        if session is None or session.conn is None:
            raise RuntimeError("no bot is connected to the fake gateway")
        await session.conn.send({"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_session(self, resumable: bool = False, *, shard: int | None = None) -> None:
        session = self._pick_session(shard)
        if session is None or session.conn is None:
            raise RuntimeError("no bot is connected to the fake gateway")
        if not resumable:
            self._sessions.pop(session.session_id, None)
        await session.conn.send({"op": 9, "d": resumable, "s": None, "t": None})

    async def disconnect_gateway(self, code: int = 4000, *, shard: int | None = None) -> None:
        session = self._pick_session(shard)
        if session is not None and session.conn is not None:
            await session.conn.ws.close(code=code, message=b"fake disconnect")

    async def _gateway_handler(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_gateway:
            self.refused_gateway_connections += 1
            return web.Response(status=503, text="gateway unavailable (fake outage)")
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=0, timeout=2.0)
        await ws.prepare(request)
        conn = _Conn(ws, dict(request.query))
        self.gateway_connections.append(conn.info)
        self._conns.add(conn)
        session: _Session | None = None
        try:
            # discord.py asks for ?compress=zlib-stream but happily accepts plain-text JSON frames.
            if request.query.get("encoding", "json") != "json":
                await ws.close(code=4002, message=b"Error while decoding payload.")
                return ws
            await conn.send(
                {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
            )
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    if msg.type is WSMsgType.BINARY:
                        await ws.close(code=4002, message=b"Error while decoding payload.")
                        break
                    continue
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                op = payload.get("op")
                d = payload.get("d")
                if op == 1:
                    conn.info["heartbeats"] += 1
                    await conn.send({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    session = await self._handle_identify(conn, session, d or {})
                elif op == 6:
                    session = await self._handle_resume(conn, d or {})
                elif op == 3:
                    self.presence_updates.append(d)
                elif op == 8:
                    await self._handle_request_members(conn, session, d or {})
                elif op == 4:
                    continue
                else:
                    await ws.close(code=4001, message=b"Unknown opcode.")
                    break
        finally:
            self._conns.discard(conn)
            conn.info["close_code"] = ws.close_code
            if session is not None and session.conn is conn:
                session.conn = None
        return ws

    async def _handle_identify(
        self, conn: _Conn, session: _Session | None, d: dict[str, Any]
    ) -> _Session | None:
        if session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return session
        if d.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = d.get("intents")
        if not isinstance(intents, int):
            await conn.ws.close(code=4013, message=b"Invalid intent(s).")
            return None
        if intents & Intent.PRIVILEGED & ~self.enabled_privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard = d.get("shard")
        if shard is not None and not (
            isinstance(shard, list)
            and len(shard) == 2
            and all(type(v) is int for v in shard)
            and 0 <= shard[0] < shard[1]
        ):
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return None
        session = _Session(secrets.token_hex(16), intents, shard)
        guild_ids = [
            gid
            for gid in self.guilds
            if shard_of(gid, session.shard_count) == session.shard_id
            and self.application_id in self.guilds[gid]["members"]  # not a server that did not add it
        ]
        if len(guild_ids) > self.max_guilds_per_shard:
            await conn.ws.close(code=4011, message=b"Sharding required.")
            return None
        self.identify_payloads.append(d)
        limit = self.session_start_limit
        limit["remaining"] = max(0, limit["remaining"] - 1)
        self._ready.clear()
        session.conn = conn
        self._sessions[session.session_id] = session
        self._session = session
        self._shard_sessions[session.shard_id] = session
        conn.info["identified"] = True
        conn.info["shard"] = [session.shard_id, session.shard_count]
        ready: dict[str, Any] = {
            "v": API_VERSION,
            "user": {**copy.deepcopy(self.bot_user), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(gid), "unavailable": True} for gid in guild_ids],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
            "_trace": ['["fake-discord-gateway",{"micros":0}]'],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        await self._session_dispatch(session, "READY", ready)
        if intents & Intent.GUILDS:
            for gid in guild_ids:
                await self._session_dispatch(session, "GUILD_CREATE", self.guild_payload(gid, full=True))
        self._ready.set()
        return session

    async def _handle_resume(self, conn: _Conn, d: dict[str, Any]) -> _Session | None:
        session = self._sessions.get(str(d.get("session_id")))
        if session is None or d.get("token") != self.token:
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return None
        session.conn = conn
        self._session = session
        self._shard_sessions[session.shard_id] = session
        conn.info["resumed"] = True
        conn.info["identified"] = True
        conn.info["shard"] = [session.shard_id, session.shard_count]
        last_seq = d.get("seq") or 0
        async with conn.lock:
            for frame in session.sent:
                if frame["s"] > last_seq:
                    await conn.ws.send_str(json.dumps(frame))
        await self._session_dispatch(session, "RESUMED", {"_trace": ["fake-discord-gateway"]})
        return session

    async def _handle_request_members(self, conn: _Conn, session: _Session | None, d: dict[str, Any]) -> None:
        if session is None:
            await conn.ws.close(code=4003, message=b"Not authenticated.")
            return
        gid = int(d.get("guild_id", 0))
        if gid not in self.guilds:
            return
        members = [self.member_payload(uid, guild_id=gid) for uid in self.guilds[gid]["members"]]
        if d.get("user_ids"):
            wanted = {int(u) for u in d["user_ids"]}
            members = [m for m in members if int(m["user"]["id"]) in wanted]
        elif d.get("query"):
            members = [m for m in members if m["user"]["username"].startswith(d["query"])]
        chunk: dict[str, Any] = {
            "guild_id": str(gid),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if d.get("nonce") is not None:
            chunk["nonce"] = d["nonce"]
        await self._session_dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)
