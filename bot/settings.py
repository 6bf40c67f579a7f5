"""Configuration from the environment and `.env`, validated once at start-up."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from yarl import URL

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    discord_token: SecretStr = Field(description="Bot token from the Discord developer portal")
    # "runcomfy" (default) or "preview": a free local stand-in that animates the image itself.
    backend: Literal["runcomfy", "preview"] = "runcomfy"
    runcomfy_api_token: SecretStr | None = Field(default=None, validate_default=True)
    runcomfy_base_url: str = "https://model-api.runcomfy.net/v1"
    runcomfy_model: str = "wan-ai/wan-2-2/image-to-video"
    database_path: Path = Path("data/animate.db")
    # postgresql://user:pass@host:5432/db selects PostgreSQL instead of SQLite at database_path.
    database_url: SecretStr | None = None
    daily_quota: int = Field(default=5, ge=0, le=10_000)
    # Credits per user per UTC day for the user-installed /animate (DMs, group DMs, servers that did not
    # add the bot), shared by all those places; unset: the same as daily_quota.
    user_install_daily_quota: int | None = Field(default=None, ge=0, le=10_000)
    cost_480p: int = Field(default=1, ge=0, le=1000)
    cost_1080p: int = Field(default=2, ge=0, le=1000)
    dev_guild_id: int | None = None
    log_level: str = "INFO"
    # "plain" (default) or "json": one JSON object per line, with job_id/guild_id/request_id fields.
    log_format: Literal["plain", "json"] = "plain"
    # /healthz and /metrics: off unless a port is set (0 picks a free port, for tests).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # Extra translation catalogs (<code>.json), read at start-up beside the bundled ones.
    locales_dir: Path | None = None
    # Gateway shards of this process (README "Growing past one server"). Unset: every shard, at the
    # count Discord recommends. SHARD_IDS (comma-separated) needs SHARD_COUNT.
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: Annotated[tuple[int, ...] | None, NoDecode] = None
    # This process's share of Discord's global 50 requests/s per token: 50 / number of processes.
    discord_rest_rate: int = Field(default=50, ge=1)
    # Seconds a process holds the jobs it works on without renewing (every third of it); a killed
    # process's jobs are taken over by another within this. Only matters with several processes.
    lease_seconds: float = Field(default=30.0, ge=5)
    # Credit packs sold through Discord (README "Selling credits"): "sku_id:credits,..." (consumable
    # one-time purchases), and optionally "sku_id:daily_allowance" for a server subscription.
    premium_skus: Annotated[tuple[tuple[int, int], ...], NoDecode] = ()
    premium_guild_sku: Annotated[tuple[int, int] | None, NoDecode] = None
    # How often granted packs whose consume failed are consumed again (and missed ones looked up).
    premium_sweep_interval: float = Field(default=300.0, gt=0)

    # Tuning knobs; defaults suit production, tests shrink them.
    poll_first_delay: float = Field(default=4.0, gt=0)
    poll_max_interval: float = Field(default=15.0, gt=0)
    # Between those bounds a job is polled every `elapsed * poll_backoff_ratio` seconds. Measured by
    # `python -m bench` (bench/RESULTS.md): ~16 status calls for a 60 s job, ~41 for 5 min, and a
    # median delivery lag under 2 s for 60 s jobs.
    poll_backoff_ratio: float = Field(default=1 / 15, gt=0, le=1)
    # After job_timeout a queued job is cancelled and a running one is checked only every
    # overdue_poll_interval; after job_hard_timeout it is given up and refunded.
    job_timeout: float = Field(default=30 * 60.0, gt=0)
    job_hard_timeout: float = Field(default=6 * 3600.0, gt=0)
    overdue_poll_interval: float = Field(default=120.0, gt=0)
    # On shutdown, how long to let commands that are submitting right now finish.
    shutdown_grace: float = Field(default=5.0, ge=0)
    # At most one status-message edit per job this often, unless the state changes.
    status_edit_interval: float = Field(default=10.0, ge=0)
    # Routine status edits within one channel are spaced this far apart (state changes are not).
    channel_edit_interval: float = Field(default=1.0, ge=0)
    http_timeout: float = Field(default=30.0, gt=0)
    retry_backoff_base: float = Field(default=1.0, gt=0)
    retry_backoff_cap: float = Field(default=30.0, gt=0)

    @field_validator("runcomfy_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        try:
            url = URL(value)
        except ValueError:
            raise ValueError("must be an https:// URL") from None
        if url.scheme == "https" and url.host:
            return value.rstrip("/")
        if url.scheme == "http" and url.host and _is_loopback(url.host):
            return value.rstrip("/")  # the local fakes in tests; a token never crosses a network in clear
        raise ValueError("must start with https:// (plain http:// only for 127.0.0.1 or localhost)")

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("locales_dir")
    @classmethod
    def _check_locales_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("must be an existing folder")
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _check_database_url(cls, value: object) -> object:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is None or (isinstance(text, str) and not text.strip()):
            return None  # an empty DATABASE_URL= line means SQLite
        if not isinstance(text, str) or not text.strip().startswith(("postgresql://", "postgres://")):
            # Never echo the value: it holds a password.
            raise ValueError("must start with postgresql://")
        return text.strip()

    @field_validator("shard_count", "user_install_daily_quota", mode="before")
    @classmethod
    def _blank_shard_count(cls, value: Any) -> Any:  # an empty line in .env means unset
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _split_shard_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return None
            parts = [p.strip() for p in value.split(",")]
            if not all(p.isdigit() for p in parts):
                raise ValueError("must be comma-separated shard numbers, e.g. 0,1")
            return tuple(int(p) for p in parts)
        return value

    @field_validator("shard_ids")
    @classmethod
    def _check_shard_ids(cls, value: tuple[int, ...] | None, info: ValidationInfo) -> tuple[int, ...] | None:
        if value is None:
            return None
        if "shard_count" not in info.data:
            return value  # SHARD_COUNT itself is invalid and reported
        count = info.data["shard_count"]
        if count is None:
            raise ValueError("requires SHARD_COUNT")
        if not value:
            raise ValueError("must name at least one shard")
        if len(set(value)) != len(value):
            raise ValueError("names a shard twice")
        if any(i < 0 or i >= count for i in value):
            raise ValueError(f"each shard must be below SHARD_COUNT={count}")
        return tuple(sorted(value))

    @field_validator("premium_skus", mode="before")
    @classmethod
    def _parse_premium_skus(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs = tuple(_sku_pair(part, "credits") for part in value.split(",") if part.strip())
        if len({sku for sku, _ in pairs}) != len(pairs):
            raise ValueError("names a SKU twice")
        if len(pairs) > 5:
            raise ValueError("at most 5 packs (one row of buttons)")
        return pairs

    @field_validator("premium_guild_sku", mode="before")
    @classmethod
    def _parse_premium_guild_sku(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return _sku_pair(value, "daily_allowance") if value.strip() else None

    @field_validator("premium_guild_sku")
    @classmethod
    def _check_guild_sku_apart(
        cls, value: tuple[int, int] | None, info: ValidationInfo
    ) -> tuple[int, int] | None:
        if value is not None and value[0] in dict(info.data.get("premium_skus") or ()):
            raise ValueError("is also listed in PREMIUM_SKUS")
        return value

    @property
    def premium_packs(self) -> dict[int, int]:
        """SKU id -> credits of each configured pack, in the configured order (empty: selling is off)."""
        return dict(self.premium_skus)

    @field_validator("discord_token")
    @classmethod
    def _check_token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("runcomfy_api_token")
    @classmethod
    def _check_runcomfy_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # `backend` is declared first, so it is already validated here.
        if info.data.get("backend", "runcomfy") == "preview":
            return value
        if value is None:
            raise ValueError(_NOT_SET + " (required unless BACKEND=preview)")
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @property
    def user_install_quota(self) -> int:
        """The user-install allowance per user and day (USER_INSTALL_DAILY_QUOTA, else DAILY_QUOTA)."""
        if self.user_install_daily_quota is None:
            return self.daily_quota
        return self.user_install_daily_quota

    @property
    def database_dsn(self) -> str | None:
        return self.database_url.get_secret_value() if self.database_url else None

    @property
    def runcomfy_token(self) -> str:
        return self.runcomfy_api_token.get_secret_value() if self.runcomfy_api_token else ""


_NOT_SET = "is not set"


# Discord ids: 64-bit snowflakes, in practice 17 to 20 digits.
_SNOWFLAKE_MIN = 10**15


def _sku_pair(text: str, what: str) -> tuple[int, int]:
    """ "sku_id:number" -> (sku_id, number); the error names the expected form, never more."""
    sku, sep, number = (p.strip() for p in text.strip().partition(":"))
    if not sep or not sku.isdigit() or not number.isdigit():
        raise ValueError(f"must be sku_id:{what} (e.g. 1234567890123456789:50)")
    if not _SNOWFLAKE_MIN <= int(sku) < 2**64:
        raise ValueError("a SKU id must be a Discord id (a snowflake, 17-20 digits)")
    if not 1 <= int(number) <= 1_000_000:
        raise ValueError(f"{what} must be between 1 and 1000000")
    return int(sku), int(number)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SettingsError(Exception):
    """A configuration problem, described in one line that never contains a secret."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming every bad or missing setting; pydantic's own text could echo secret input."""
    parts: list[str] = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err.get("loc", ())).upper() or "settings"
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "missing":
            parts.append(f"{name} is not set")
        elif message.startswith(_NOT_SET):
            parts.append(f"{name} {message}")
        else:
            # `msg` holds the validator's text, never the input value.
            parts.append(f"{name} is invalid ({message})")
    return "Configuration error: " + "; ".join(parts) + " -- see .env.example"


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
