"""/animate-admin: per-guild settings -- quotas, channels, moderation, audit log -- without editing files.

`_cog` holds the cog and the root group (show, admin-role, audit-channel); `_quota`, `_channels` and
`_moderation` one subcommand group each; `_base` what every group shares; `_embed` the `show` embed;
`checks` the admin check, which other cogs' admin-only commands use too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.client import AnimateBot


async def setup(bot: AnimateBot) -> None:
    from cogs.admin._cog import Admin

    await bot.add_cog(Admin(bot))
