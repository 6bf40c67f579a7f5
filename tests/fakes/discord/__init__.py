"""A fake Discord (REST API + gateway + CDN) that the real, unmodified discord.py client can log into.

Everything runs on 127.0.0.1 with an aiohttp.web server on an ephemeral port.  Point discord.py at it with
:func:`patched_discord` and drive it from tests with :class:`FakeDiscord` (``slash``, ``click``,
``autocomplete``, ``submit_modal``, ``dispatch`` ...).  Every REST call is recorded; unknown routes are
answered with a Discord-style 404 and collected in ``FakeDiscord.unknown_routes``.

The fake enforces the Discord rules that bots most often get wrong:

* an interaction must be acknowledged within ``ack_deadline`` (3 s) of being dispatched, otherwise the
  callback answers 404 ``{code: 10062, "Unknown interaction"}``;
* a second callback answers 400 ``{code: 40060, "Interaction has already been acknowledged."}``;
* follow-ups before the initial response answer 404 ``{code: 10015, "Unknown Webhook"}``;
* after a deferred (type 5) response the *first* follow-up edits the "thinking..." message and inherits
  its ephemeral flag (what real Discord does);
* message limits (2000 chars content, 10 embeds / 6000 chars, 5 action rows x 5 buttons, unique
  custom_ids, ...) answer 400 ``{code: 50035, "Invalid Form Body"}`` with the nested ``errors`` tree,
  empty messages answer 400 ``{code: 50006}``;
* files larger than ``upload_limit`` (10 MiB) answer 413 ``{code: 40005}``;
* channel permissions (role permissions + overwrites) are computed for the bot: missing
  VIEW_CHANNEL -> 403 50001, missing SEND_MESSAGES / ATTACH_FILES / CREATE_PUBLIC_THREADS -> 403 50013.

The package is split along its seams, one mixin per module, composed into one :class:`FakeDiscord` (so
``fake.xyz`` works for every feature): ``_world`` (users, guilds, roles, members, channels, permissions),
``_payloads`` (payload builders), ``_validation`` (Discord's limits and form errors), ``_gateway``
(websocket, IDENTIFY/RESUME, shards, dispatch), ``_interactions`` (FakeInteraction, slash, click, modals),
``_webhooks`` (interaction callback and follow-ups), ``_messages`` (messages, threads and their routes),
``_rest`` (routing, recording, faults, CDN, other routes).  ``_state`` holds the state they share (and
declares what one seam calls on another, for the type checker), ``_common`` constants, bits and records,
``_fake`` the composed class, its default world, route table and lifecycle, and ``patched_discord``.
"""

from ._common import (
    API_VERSION,
    ATTACHMENT_IS_SPOILER,
    DISCORD_EPOCH_MS,
    DISCORD_LOCALES,
    EPHEMERAL,
    HAS_THREAD,
    IS_COMPONENTS_V2,
    LOADING,
    MIB,
    SUPPRESS_EMBEDS,
    SUPPRESS_NOTIFICATIONS,
    DiscordError,
    Intent,
    Perm,
    RecordedCall,
    shard_of,
)
from ._fake import FakeDiscord, patched_discord
from ._interactions import FakeInteraction

__all__ = [
    "API_VERSION",
    "ATTACHMENT_IS_SPOILER",
    "DISCORD_EPOCH_MS",
    "DISCORD_LOCALES",
    "EPHEMERAL",
    "HAS_THREAD",
    "IS_COMPONENTS_V2",
    "LOADING",
    "MIB",
    "SUPPRESS_EMBEDS",
    "SUPPRESS_NOTIFICATIONS",
    "DiscordError",
    "FakeDiscord",
    "FakeInteraction",
    "Intent",
    "Perm",
    "RecordedCall",
    "patched_discord",
    "shard_of",
]
