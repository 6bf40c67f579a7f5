"""REST plumbing: routing, recording, faults (fail_next, fail_after_store, stalls), CDN, simple routes."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import re
import time
from typing import Any

import yarl
from aiohttp import web

from ._common import (
    API_VERSION,
    DiscordError,
    RecordedCall,
    _Fault,
    _FormErrors,
    _Handler,
    _json_response,
    _Request,
    _Upload,
)
from ._state import FakeState


class RestMixin(FakeState):
    """The HTTP side of the fake: routes, recorded calls, injected faults, CDN."""

    # ---------------------------------------------------------------------------------------------------
    # Recorded calls and injected faults
    # ---------------------------------------------------------------------------------------------------

    def calls_to(self, method: str, path_regex: str) -> list[RecordedCall]:
        pattern = re.compile(path_regex)
        return [c for c in self.calls if (method in ("*", c.method)) and pattern.search(c.path)]

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        body: Any = None,
        retry_after: float | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> _Fault:
        """Make the next ``times`` requests matching ``method`` ("*" = any) and ``path_regex`` (searched in
        the path relative to /api/v10, e.g. r"/channels/\\d+/messages/\\d+$") fail with ``status``."""
        fault = _Fault(
            method=method.upper(),
            pattern=re.compile(path_regex),
            status=status,
            body=body,
            retry_after=retry_after,
            remaining=times,
            headers=headers,
        )
        self._faults.append(fault)
        return fault

    def fail_after_store(
        self,
        method: str,
        path_regex: str,
        outcome: int | str = 503,
        *,
        times: int = 1,
        body: Any = None,
        hold: float = 30.0,
    ) -> _Fault:
        """Let the next ``times`` successful requests matching ``method`` and ``path_regex`` take effect
        (the message is stored), then answer badly: ``outcome`` is an HTTP status (answered with a
        Discord-style body or ``body``), ``"drop"`` (the connection is closed without an answer) or
        ``"timeout"`` (no answer for ``hold`` seconds, then the connection is closed).  Requests that
        fail on their own do not use up the fault."""
        if not (isinstance(outcome, int) or outcome in ("drop", "timeout")):
            raise ValueError(f"outcome must be a status, 'drop' or 'timeout', not {outcome!r}")
        fault = _Fault(
            method=method.upper(),
            pattern=re.compile(path_regex),
            status=outcome if isinstance(outcome, int) else 0,
            body=body,
            retry_after=None,
            remaining=times,
            headers=None,
            after_store=outcome,
            hold=hold,
        )
        self._after_store.append(fault)
        return fault

    def stall_after(self, method: str, path_regex: str) -> asyncio.Event:
        """Let the next matching request take effect, then hold its response until the returned event is
        set -- the window in which a real client may crash after Discord acted but before it heard back."""
        release = asyncio.Event()
        self._stalls.append((method.upper(), re.compile(path_regex), release))
        return release

    # ---------------------------------------------------------------------------------------------------
    # HTTP plumbing
    # ---------------------------------------------------------------------------------------------------

    def _route(self, pattern: str, auth: bool = True, **methods: _Handler) -> None:
        self._routes.append((re.compile(pattern), {m.upper(): h for m, h in methods.items()}, auth))

    async def _read_body(self, request: web.Request) -> tuple[Any, list[_Upload]]:
        uploads: list[_Upload] = []
        body: Any = None
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part is None or not hasattr(part, "read"):
                    continue
                data = bytes(await part.read(decode=False))  # type: ignore[union-attr]
                name = part.name or ""
                if name == "payload_json":
                    body = json.loads(data.decode("utf-8"))
                else:
                    ctype = part.headers.get("Content-Type", "application/octet-stream")
                    uploads.append(_Upload(name, part.filename or "unknown", data, ctype))  # type: ignore[union-attr]
        elif request.body_exists:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None
        return body, uploads

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.method in ("*", method) and fault.pattern.search(path):
                fault.remaining -= 1
                fault.hits += 1
                return fault
        return None

    def _take_after_store(self, method: str, path: str) -> _Fault | None:
        for fault in self._after_store:
            if fault.remaining > 0 and fault.method in ("*", method) and fault.pattern.search(path):
                fault.remaining -= 1
                fault.hits += 1
                return fault
        return None

    async def _answer_after_store(self, request: web.Request, fault: _Fault, path: str) -> web.StreamResponse:
        """The request took effect; now answer it the way a failing Discord edge would."""
        if fault.after_store == "timeout":
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(fault.hold)
        if fault.after_store in ("drop", "timeout"):
            if request.transport is not None:
                request.transport.abort()  # the client sees the connection go away, unanswered
            raise asyncio.CancelledError  # aiohttp drops the handler quietly
        return self._fault_response(fault, path)

    def _fault_response(self, fault: _Fault, path: str) -> web.Response:
        headers = dict(fault.headers or {})
        if fault.status == 429:
            retry = fault.retry_after if fault.retry_after is not None else 1.0
            body = fault.body or {
                "message": "You are being rate limited.",
                "retry_after": retry,
                "global": False,
            }
            headers = {
                "Retry-After": str(max(1, int(retry + 0.999))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
                "X-RateLimit-Reset-After": f"{retry:.3f}",
                "X-RateLimit-Bucket": hashlib.md5(path.encode()).hexdigest(),
                "X-RateLimit-Scope": "user",
                # discord.py treats a 429 *without* a Via header as a Cloudflare ban and raises instead of
                # sleeping and retrying.
                "Via": "1.1 google",
                **headers,
            }
            return _json_response(body, 429, headers)
        if fault.body is not None:
            return _json_response(fault.body, fault.status, headers)
        defaults = {
            400: (0, "400: Bad Request"),
            401: (0, "401: Unauthorized"),
            403: (50013, "Missing Permissions"),
            500: (0, "500: Internal Server Error"),
            502: (0, "502: Bad Gateway"),
            503: (0, "503: Service Unavailable"),
        }
        if fault.status == 404:
            if "/messages" in path:
                code, message = 10008, "Unknown Message"
            elif path.startswith("/channels"):
                code, message = 10003, "Unknown Channel"
            elif path.startswith("/interactions"):
                code, message = 10062, "Unknown interaction"
            elif path.startswith("/webhooks"):
                code, message = 10015, "Unknown Webhook"
            else:
                code, message = 0, "404: Not Found"
        else:
            code, message = defaults.get(fault.status, (0, f"{fault.status}: Error"))
        return _json_response({"message": message, "code": code}, fault.status, headers)

    async def _api_handler(self, request: web.Request) -> web.StreamResponse:
        prefix = f"/api/v{request.match_info['version']}"
        path = request.path[len(prefix) :] or "/"
        method = request.method.upper()
        call = RecordedCall(method=method, path=path, query=dict(request.query), json=None, files=[])
        call.reason = request.headers.get("X-Audit-Log-Reason")
        call.authorized = request.headers.get("Authorization") == f"Bot {self.token}"
        self.calls.append(call)
        try:
            body, uploads = await self._read_body(request)
        except DiscordError as exc:
            call.status = exc.status
            return _json_response(exc.body(), exc.status)
        call.json = body
        call.files = [(u.filename, u.data, u.content_type) for u in uploads]
        if self.response_delay:
            await asyncio.sleep(self.response_delay)

        if request.match_info["version"] != str(API_VERSION):
            self.unknown_routes.append(call)
            call.status = 404
            return _json_response({"message": "404: Not Found", "code": 0}, 404)

        handler: _Handler | None = None
        groups: tuple[str, ...] = ()
        needs_auth = True
        path_matched = False
        for pattern, methods, auth in self._routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            path_matched = True
            if method in methods:
                handler, groups, needs_auth = methods[method], m.groups(), auth
                break
        if handler is None:
            self.unknown_routes.append(call)
            status, message = (405, "405: Method Not Allowed") if path_matched else (404, "404: Not Found")
            call.status = status
            return _json_response({"message": message, "code": 0}, status)
        if needs_auth and not call.authorized:
            call.status = 401
            return _json_response({"message": "401: Unauthorized", "code": 0}, 401)
        fault = self._take_fault(method, path)
        if fault is not None:
            resp = self._fault_response(fault, path)
            call.status = resp.status
            return resp
        req = _Request(method, path, call.query, body, uploads, call)
        try:
            resp = await handler(req, *groups)
        except DiscordError as exc:
            resp = _json_response(exc.body(), exc.status, exc.headers)
        call.status = resp.status
        if resp.status < 300:
            after = self._take_after_store(method, path)
            if after is not None:
                call.status = after.status
                return await self._answer_after_store(request, after, path)
        for stall in self._stalls:
            if stall[0] in ("*", method) and stall[1].search(path):
                self._stalls.remove(stall)
                await stall[2].wait()
                break
        return resp

    def slow_cdn(self, attachment: dict[str, Any], delay: float) -> str:
        """Answer requests for this attachment after `delay` seconds, recording how many were in flight
        at once (`cdn_peak[path]`, and `cdn_peak_total` over all slow files). Returns the CDN path."""
        path = yarl.URL(attachment["url"]).path
        self.cdn_delays[path] = delay
        return path

    async def _cdn_handler(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.cdn_requests.append(path)
        if path.startswith("/media/"):
            path = path[len("/media") :]
        entry = self._cdn.get(path)
        if entry is None or request.method not in ("GET", "HEAD"):
            return web.Response(status=404, text="Not Found")
        data, ctype = entry
        delay = self.cdn_delays.get(path)
        if delay is not None:
            self._cdn_in_flight[path] = self._cdn_in_flight.get(path, 0) + 1
            self.cdn_peak[path] = max(self.cdn_peak.get(path, 0), self._cdn_in_flight[path])
            self.cdn_peak_total = max(self.cdn_peak_total, sum(self._cdn_in_flight.values()))
            try:
                await asyncio.sleep(delay)
            finally:
                self._cdn_in_flight[path] -= 1
        return web.Response(body=data, headers={"Content-Type": ctype or "application/octet-stream"})

    # ---------------------------------------------------------------------------------------------------
    # Route handlers: users, gateway, application, commands
    # ---------------------------------------------------------------------------------------------------

    async def _h_get_me(self, req: _Request) -> web.Response:
        return _json_response({**self.bot_user, "verified": True, "mfa_enabled": False, "locale": "en-US"})

    async def _h_get_user(self, req: _Request, uid: str) -> web.Response:
        if int(uid) not in self.users:
            raise DiscordError(404, 10013, "Unknown User")
        return _json_response(self.user_payload(int(uid)))

    async def _h_gateway(self, req: _Request) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _h_gateway_bot(self, req: _Request) -> web.Response:
        return _json_response(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": dict(self.session_start_limit),
            }
        )

    async def _h_application(self, req: _Request) -> web.Response:
        return _json_response(self.application_payload())

    def _command_list(self, app_id: str, guild_id: str | None = None) -> list[dict[str, Any]]:
        if int(app_id) != self.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        if guild_id is None:
            return self.global_commands
        if int(guild_id) not in self.guilds:
            raise DiscordError(403, 50001, "Missing Access")
        return self.guild_commands.setdefault(int(guild_id), [])

    async def _h_list_commands(self, req: _Request, app_id: str, guild_id: str | None = None) -> web.Response:
        return _json_response(copy.deepcopy(self._command_list(app_id, guild_id)))

    async def _h_put_commands(self, req: _Request, app_id: str, guild_id: str | None = None) -> web.Response:
        current = self._command_list(app_id, guild_id)
        body = req.json
        if not isinstance(body, list):
            raise DiscordError(
                400, 50035, "Invalid Form Body", errors={"_errors": [{"code": "BASE_TYPE_LIST"}]}
            )
        errors = _FormErrors()
        errors.max_len((), body, 100)
        seen: set[tuple[str, int]] = set()
        for i, cmd in enumerate(body):
            self._validate_command(cmd, errors, (i,))
            if isinstance(cmd, dict):
                key = (str(cmd.get("name")), int(cmd.get("type", 1)))
                if key in seen:
                    errors.add(
                        (i, "name"),
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        f"Application command names must be unique: {key[0]}",
                    )
                seen.add(key)
        errors.raise_if_any()
        new = [self._normalize_command(c, guild_id, current) for c in body]
        current[:] = new
        return _json_response(copy.deepcopy(new))

    async def _h_post_command(self, req: _Request, app_id: str, guild_id: str | None = None) -> web.Response:
        current = self._command_list(app_id, guild_id)
        errors = _FormErrors()
        self._validate_command(req.json, errors, ())
        errors.raise_if_any()
        cmd = self._normalize_command(req.json, guild_id, current)
        existed = any(c["id"] == cmd["id"] for c in current)
        current[:] = [c for c in current if c["id"] != cmd["id"]] + [cmd]
        return _json_response(copy.deepcopy(cmd), 200 if existed else 201)

    def _find_command_by_id(self, app_id: str, args: tuple[str, ...]) -> tuple[list[dict[str, Any]], dict]:
        guild_id, cmd_id = (args[0], args[1]) if len(args) == 2 else (None, args[0])
        current = self._command_list(app_id, guild_id)
        for cmd in current:
            if cmd["id"] == cmd_id:
                return current, cmd
        raise DiscordError(404, 10063, "Unknown application command")

    async def _h_get_command(self, req: _Request, app_id: str, *args: str) -> web.Response:
        _, cmd = self._find_command_by_id(app_id, args)
        return _json_response(copy.deepcopy(cmd))

    async def _h_patch_command(self, req: _Request, app_id: str, *args: str) -> web.Response:
        _, cmd = self._find_command_by_id(app_id, args)
        merged = {**cmd, **(req.json or {})}
        errors = _FormErrors()
        self._validate_command(merged, errors, ())
        errors.raise_if_any()
        cmd.update(req.json or {})
        cmd["version"] = str(self._snowflake())
        return _json_response(copy.deepcopy(cmd))

    async def _h_delete_command(self, req: _Request, app_id: str, *args: str) -> web.Response:
        current, cmd = self._find_command_by_id(app_id, args)
        current.remove(cmd)
        return web.Response(status=204)

    # ---------------------------------------------------------------------------------------------------
    # Route handlers: guilds, DMs
    # ---------------------------------------------------------------------------------------------------

    def _guild(self, gid: str) -> int:
        if int(gid) not in self.guilds:
            raise DiscordError(404, 10004, "Unknown Guild")
        return int(gid)

    async def _h_get_guild(self, req: _Request, gid: str) -> web.Response:
        payload = self.guild_payload(self._guild(gid))
        if req.query.get("with_counts") in ("1", "true", "True"):
            payload["approximate_member_count"] = len(self.guilds[int(gid)]["members"])
            payload["approximate_presence_count"] = 0
        return _json_response(payload)

    async def _h_guild_channels(self, req: _Request, gid: str) -> web.Response:
        g = self.guilds[self._guild(gid)]
        return _json_response([self.channel_payload(c) for c in g["channel_ids"]])

    async def _h_guild_roles(self, req: _Request, gid: str) -> web.Response:
        g = self.guilds[self._guild(gid)]
        return _json_response(copy.deepcopy(list(g["roles"].values())))

    async def _h_get_member(self, req: _Request, gid: str, uid: str) -> web.Response:
        guild_id = self._guild(gid)
        if int(uid) not in self.users:
            raise DiscordError(404, 10013, "Unknown User")
        if int(uid) not in self.guilds[guild_id]["members"]:
            raise DiscordError(404, 10007, "Unknown Member")
        return _json_response(self.member_payload(int(uid), guild_id=guild_id))

    async def _h_create_dm(self, req: _Request) -> web.Response:
        body = req.json or {}
        try:
            uid = int(body.get("recipient_id"))
        except (TypeError, ValueError):
            raise DiscordError(
                400,
                50035,
                "Invalid Form Body",
                errors={"recipient_id": {"_errors": [{"code": "BASE_TYPE_REQUIRED"}]}},
            ) from None
        if uid not in self.users:
            raise DiscordError(404, 10013, "Unknown User")
        return _json_response(self.channel_payload(self.open_dm(uid)))
