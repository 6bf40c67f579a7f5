from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNCOMFY_", "DAILY_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def test_python_m_bot_without_settings_says_what_is_missing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "DISCORD_TOKEN is not set" in lines[0]
    assert "RUNCOMFY_API_TOKEN is not set" in lines[0]
    assert "Traceback" not in proc.stderr


def test_invalid_value_is_named_without_echoing_secrets(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=clean_env(
            DISCORD_TOKEN="secret-discord-token-123",
            RUNCOMFY_API_TOKEN="secret-runcomfy-token-456",
            DAILY_QUOTA="lots",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "DAILY_QUOTA is invalid" in proc.stderr
    assert "secret-" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_settings_read_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("DISCORD_", "RUNCOMFY_", "DAILY_", "DATABASE_", "DEV_GUILD")):
            monkeypatch.delenv(key)
    (tmp_path / ".env").write_text(
        "DISCORD_TOKEN=abc\nRUNCOMFY_API_TOKEN=def\nDAILY_QUOTA=7\nDEV_GUILD_ID=123\n"
        "RUNCOMFY_BASE_URL=https://example.invalid/v1/\n"
    )
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.discord_token.get_secret_value() == "abc"
    assert settings.daily_quota == 7 and settings.dev_guild_id == 123
    assert settings.runcomfy_base_url == "https://example.invalid/v1"
    assert "abc" not in repr(settings) and "def" not in repr(settings)


def test_blank_token_and_bad_url_are_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError) as info:
        load_settings(discord_token="  ", runcomfy_api_token="x", runcomfy_base_url="ftp://nope")
    text = str(info.value)
    assert "DISCORD_TOKEN is invalid" in text and "RUNCOMFY_BASE_URL is invalid" in text


def test_preview_backend_needs_no_runcomfy_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    settings = load_settings(discord_token="x", backend="preview")
    assert settings.backend == "preview" and settings.runcomfy_token == ""
    with pytest.raises(
        SettingsError, match="RUNCOMFY_API_TOKEN is not set \\(required unless BACKEND=preview\\)"
    ):
        load_settings(discord_token="x")
    with pytest.raises(SettingsError, match="BACKEND is invalid"):
        load_settings(discord_token="x", runcomfy_api_token="y", backend="magic")


def test_every_setting_is_documented() -> None:
    from bot.settings import Settings

    env_example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in (field.upper() for field in Settings.model_fields):
        assert f"{name}=" in env_example, f"{name} missing from .env.example"
        assert f"`{name}`" in readme, f"{name} missing from README's settings tables"


def test_plain_http_only_for_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for url in (
        "http://127.0.0.1:8080/v1",
        "http://localhost/v1",
        "http://[::1]:9/v1",
        "https://a.example/v1",
    ):
        assert load_settings(discord_token="x", runcomfy_api_token="y", runcomfy_base_url=url)
    for url in (
        "http://model-api.runcomfy.net/v1",
        "http://10.0.0.1/v1",
        "https://",
        "model-api.runcomfy.net",
    ):
        with pytest.raises(SettingsError, match="RUNCOMFY_BASE_URL is invalid \\(must start with https://"):
            load_settings(discord_token="x", runcomfy_api_token="y", runcomfy_base_url=url)


def test_operations_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(discord_token="x", runcomfy_api_token="y")
    assert settings.metrics_port is None and settings.metrics_host == "127.0.0.1"
    assert settings.log_format == "plain" and settings.locales_dir is None
    settings = load_settings(
        discord_token="x",
        runcomfy_api_token="y",
        metrics_port="9100",
        log_format="json",
        locales_dir=tmp_path,
    )
    assert (
        settings.metrics_port == 9100 and settings.log_format == "json" and settings.locales_dir == tmp_path
    )
    with pytest.raises(SettingsError, match="METRICS_PORT is invalid"):
        load_settings(discord_token="x", runcomfy_api_token="y", metrics_port=70000)
    with pytest.raises(SettingsError, match="LOG_FORMAT is invalid"):
        load_settings(discord_token="x", runcomfy_api_token="y", log_format="xml")
    with pytest.raises(SettingsError, match="LOCALES_DIR is invalid \\(must be an existing folder\\)"):
        load_settings(discord_token="x", runcomfy_api_token="y", locales_dir=tmp_path / "missing")


def test_env_example_words_match_the_validators(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    env_example = (ROOT / ".env.example").read_text()
    assert "# DEBUG, INFO, WARNING, ERROR or CRITICAL." in env_example
    for level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        assert (
            load_settings(discord_token="x", runcomfy_api_token="y", log_level=level.lower()).log_level
            == level
        )
    assert "plain http:// only for 127.0.0.1, ::1 or localhost" in env_example


def test_database_url_selects_postgres_and_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    base = {"discord_token": "t", "runcomfy_api_token": "r"}
    assert load_settings(**base).database_dsn is None  # SQLite at DATABASE_PATH, as before
    assert load_settings(**base, database_url="  ").database_dsn is None  # an empty line in .env
    url = "postgresql://bot:pg-secret-789@db:5432/animate"
    settings = load_settings(**base, database_url=url)
    assert settings.database_dsn == url and "pg-secret" not in repr(settings)
    with pytest.raises(SettingsError, match="DATABASE_URL is invalid") as caught:
        load_settings(**base, database_url="mysql://bot:pg-secret-789@db/animate")
    assert "pg-secret" not in str(caught.value)


def test_shard_and_rest_rate_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    tokens = {"discord_token": "x", "runcomfy_api_token": "y"}
    settings = load_settings(**tokens)
    assert settings.shard_count is None and settings.shard_ids is None
    assert settings.discord_rest_rate == 50
    settings = load_settings(**tokens, shard_count="3", shard_ids=" 2, 0", discord_rest_rate="16")
    assert settings.shard_count == 3 and settings.shard_ids == (0, 2) and settings.discord_rest_rate == 16
    assert load_settings(**tokens, shard_count="2").shard_ids is None  # every shard of the count here
    assert load_settings(**tokens, shard_count="", shard_ids="").shard_count is None  # blank = unset
    for bad, message in (
        ({"shard_ids": "0"}, "SHARD_IDS is invalid (requires SHARD_COUNT)"),
        (
            {"shard_count": "2", "shard_ids": "2"},
            "SHARD_IDS is invalid (each shard must be below SHARD_COUNT=2)",
        ),
        (
            {"shard_count": "2", "shard_ids": "0;1"},
            "SHARD_IDS is invalid (must be comma-separated shard numbers",
        ),
        (
            {"shard_count": "2", "shard_ids": "-1"},
            "SHARD_IDS is invalid (must be comma-separated shard numbers",
        ),
        ({"shard_count": "2", "shard_ids": "1,1"}, "SHARD_IDS is invalid (names a shard twice)"),
        ({"shard_count": "0"}, "SHARD_COUNT is invalid"),
        ({"discord_rest_rate": "0"}, "DISCORD_REST_RATE is invalid"),
    ):
        with pytest.raises(SettingsError) as info:
            load_settings(**tokens, **bad)
        assert message in str(info.value)
        assert str(info.value).count(";") == 0  # one problem, one clause
    with pytest.raises(SettingsError) as info:  # a bad count is named once, not as an id problem
        load_settings(**tokens, shard_count="many", shard_ids="1")
    assert "SHARD_COUNT is invalid" in str(info.value) and "SHARD_IDS" not in str(info.value)


def test_shard_settings_from_the_environment(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env=clean_env(DISCORD_TOKEN="t", RUNCOMFY_API_TOKEN="r", SHARD_COUNT="2", SHARD_IDS="0,5"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Configuration error: SHARD_IDS is invalid (each shard must be below SHARD_COUNT=2)"
        " -- see .env.example"
    ]


def test_premium_skus_are_parsed_and_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    sku, other = 1234567890123456789, 1234567890123456790
    base = {"discord_token": "x", "runcomfy_api_token": "y"}
    assert load_settings(**base).premium_packs == {}
    settings = load_settings(**base, premium_skus=f" {sku}:50 , {other}:10", premium_guild_sku="")
    assert settings.premium_packs == {sku: 50, other: 10} and settings.premium_guild_sku is None
    assert load_settings(**base, premium_guild_sku=f"{other}:20").premium_guild_sku == (other, 20)
    for value, words in [
        ("12:5", "a SKU id must be a Discord id"),
        (f"{sku}:0", "credits must be between 1 and 1000000"),
        (f"{sku}", "must be sku_id:credits"),
        (f"{sku}:5,{sku}:6", "names a SKU twice"),
        (",".join(f"{sku + i}:1" for i in range(6)), "at most 5 packs"),
    ]:
        with pytest.raises(SettingsError) as info:
            load_settings(**base, premium_skus=value)
        assert f"PREMIUM_SKUS is invalid ({words}" in str(info.value), value
    with pytest.raises(SettingsError, match="PREMIUM_GUILD_SKU is invalid"):
        load_settings(**base, premium_skus=f"{sku}:5", premium_guild_sku=f"{sku}:20")
