"""`python -m bot check` against the fake Discord and the fake RunComfy: good and bad tokens."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot import check
from bot.settings import Settings, load_settings
from tests.e2e.conftest import SITECUSTOMIZE
from tests.fakes.discord import FakeDiscord, patched_discord
from tests.fakes.runcomfy import FakeRunComfy

ROOT = Path(__file__).resolve().parents[2]
DISCORD_TOKEN = "check-discord-token-123"
RUNCOMFY_TOKEN = "check-runcomfy-token-456"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeDiscord, FakeRunComfy]]:
    async with FakeDiscord(DISCORD_TOKEN) as discord_fake, FakeRunComfy(RUNCOMFY_TOKEN) as runcomfy:
        with patched_discord(discord_fake):
            yield discord_fake, runcomfy


def loader(runcomfy: FakeRunComfy, tmp_path: Path, **overrides: Any) -> Callable[[], Settings]:
    values: dict[str, Any] = {
        "discord_token": DISCORD_TOKEN,
        "runcomfy_api_token": RUNCOMFY_TOKEN,
        "runcomfy_base_url": runcomfy.base_url,
        "database_path": tmp_path / "data" / "bot.db",
        "_env_file": None,
    }
    values.update(overrides)
    return lambda: load_settings(**values)


def states(lines: list[check.Line]) -> dict[str, str]:
    return {line.name: line.state for line in lines}


async def test_good_tokens_pass_every_line(fakes: tuple[FakeDiscord, FakeRunComfy], tmp_path: Path) -> None:
    discord_fake, runcomfy = fakes
    lines = await check.run_checks(loader(runcomfy, tmp_path))
    assert states(lines) == {
        "Settings": "ok",
        "Languages": "ok",
        "Database": "ok",
        "Discord token": "ok",
        "Invite URL": "ok",
        "RunComfy token": "ok",
    }
    invite = next(line.detail for line in lines if line.name == "Invite URL")
    assert invite == (
        f"https://discord.com/oauth2/authorize?client_id={discord_fake.application_id}"
        "&scope=bot+applications.commands&permissions=309237763072"
    )
    assert (tmp_path / "data" / "bot.db").exists()  # opened and migrated
    # One cheap authenticated read, never a submit.
    assert [r.endpoint for r in runcomfy.requests] == ["status"]
    assert runcomfy.requests[0].authorized
    out = io.StringIO()
    check.render(lines, out)
    text = out.getvalue()
    assert text.count("✔") == 6 and "✘" not in text
    assert DISCORD_TOKEN not in text and RUNCOMFY_TOKEN not in text


async def test_both_install_urls_are_printed(fakes: tuple[FakeDiscord, FakeRunComfy], tmp_path: Path) -> None:
    discord_fake, runcomfy = fakes
    lines = await check.run_checks(loader(runcomfy, tmp_path))
    out = io.StringIO()
    check.render(lines, out)
    text = out.getvalue().splitlines()
    app = discord_fake.application_id
    server = f"https://discord.com/oauth2/authorize?client_id={app}&scope=bot+applications.commands"
    user = (
        f"https://discord.com/oauth2/authorize?client_id={app}&scope=applications.commands&integration_type=1"
    )
    invite = next(i for i, line in enumerate(text) if "Invite URL" in line)
    assert server in text[invite]
    # The user install follows on its own line, aligned under the server's URL, without a mark.
    assert text[invite + 1].strip() == f"user install: {user}"
    assert text[invite + 1].index("user install") == text[invite].index("https://")
    # Both are the URLs README's "Setting it up" gives (with YOUR_APP_ID filled in).
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for url in (server + "&permissions=309237763072", user):
        assert url.replace(str(app), "YOUR_APP_ID") + "`" in readme


async def test_bad_discord_token_fails(fakes: tuple[FakeDiscord, FakeRunComfy], tmp_path: Path) -> None:
    _, runcomfy = fakes
    lines = await check.run_checks(loader(runcomfy, tmp_path, discord_token="wrong-token"))
    assert states(lines)["Discord token"] == "fail"
    assert states(lines)["Invite URL"] == "skip"
    assert states(lines)["RunComfy token"] == "ok"
    assert "rejected by Discord" in next(line.detail for line in lines if line.name == "Discord token")


async def test_bad_runcomfy_token_fails(fakes: tuple[FakeDiscord, FakeRunComfy], tmp_path: Path) -> None:
    _, runcomfy = fakes
    lines = await check.run_checks(loader(runcomfy, tmp_path, runcomfy_api_token="wrong-token"))
    assert states(lines)["RunComfy token"] == "fail"
    assert states(lines)["Discord token"] == "ok"
    assert "RUNCOMFY_API_TOKEN" in next(line.detail for line in lines if line.name == "RunComfy token")


async def test_unreachable_runcomfy_and_odd_answers_fail(
    fakes: tuple[FakeDiscord, FakeRunComfy], tmp_path: Path
) -> None:
    _, runcomfy = fakes
    runcomfy.fail_next("status", 500)
    lines = await check.run_checks(loader(runcomfy, tmp_path))
    assert states(lines)["RunComfy token"] == "fail"
    assert "HTTP 500" in lines[-1].detail
    lines = await check.run_checks(loader(runcomfy, tmp_path, runcomfy_base_url="http://127.0.0.1:9/v1"))
    assert states(lines)["RunComfy token"] == "fail"
    assert "could not reach" in lines[-1].detail


async def test_preview_backend_skips_runcomfy(
    fakes: tuple[FakeDiscord, FakeRunComfy], tmp_path: Path
) -> None:
    _, runcomfy = fakes
    lines = await check.run_checks(loader(runcomfy, tmp_path, backend="preview", runcomfy_api_token=None))
    assert states(lines)["RunComfy token"] == "skip"
    assert "BACKEND=preview" in lines[-1].detail
    assert runcomfy.requests == []
    out = io.StringIO()
    check.render(lines, out)
    assert "–" in out.getvalue() and "All checks passed" in out.getvalue()


async def test_missing_settings_are_a_failed_line_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith(("DISCORD_", "RUNCOMFY_")):
            monkeypatch.delenv(key)
    lines = await check.run_checks()
    assert lines[0].state == "fail" and "DISCORD_TOKEN is not set" in lines[0].detail
    assert all(line.state == "skip" for line in lines[1:])


async def test_unusable_database_fails(fakes: tuple[FakeDiscord, FakeRunComfy], tmp_path: Path) -> None:
    _, runcomfy = fakes
    (tmp_path / "file").write_text("not a folder")
    lines = await check.run_checks(loader(runcomfy, tmp_path, database_path=tmp_path / "file" / "bot.db"))
    assert states(lines)["Database"] == "fail"


async def test_a_broken_catalog_in_locales_dir_fails(
    fakes: tuple[FakeDiscord, FakeRunComfy], tmp_path: Path
) -> None:
    _, runcomfy = fakes
    locales = tmp_path / "locales"
    locales.mkdir()
    (locales / "fr.json").write_text('{"Hello": "Bonjour"}')
    lines = await check.run_checks(loader(runcomfy, tmp_path, locales_dir=locales))
    assert states(lines)["Languages"] == "ok" and "fr" in lines[1].detail
    (locales / "it.json").write_text("{not json")
    (locales / "french.json").write_text("{}")
    lines = await check.run_checks(loader(runcomfy, tmp_path, locales_dir=locales))
    assert states(lines)["Languages"] == "fail" and "it.json" in lines[1].detail
    assert "'french' is not a Discord locale code" in lines[1].detail


def test_ascii_terminal_gets_ascii_marks() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    check.render([check.Line("ok", "Settings", "valid"), check.Line("fail", "Database", "no")], stream)
    stream.flush()
    text = stream.buffer.getvalue().decode()  # type: ignore[attr-defined]
    assert "[ok] Settings" in text and "[FAIL] Database" in text


async def run_check_process(
    tmp_path: Path, discord_fake: FakeDiscord, runcomfy: FakeRunComfy, *command: str, **env: str
) -> tuple[int, str, str]:
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNCOMFY_"))}
    environ.update(
        PYTHONPATH=os.pathsep.join([str(shim), str(ROOT)]),
        PYTHONIOENCODING="utf-8",
        FAKE_DISCORD_URL=discord_fake.url,
        DISCORD_TOKEN=DISCORD_TOKEN,
        RUNCOMFY_API_TOKEN=RUNCOMFY_TOKEN,
        RUNCOMFY_BASE_URL=runcomfy.base_url,
        DATABASE_PATH=str(tmp_path / "bot.db"),
    )
    environ.update(env)
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_python_m_bot_check_as_the_readme_says(
    fakes: tuple[FakeDiscord, FakeRunComfy], tmp_path: Path
) -> None:
    discord_fake, runcomfy = fakes
    code, out, err = await run_check_process(
        tmp_path, discord_fake, runcomfy, sys.executable, "-m", "bot", "check"
    )
    assert code == 0, out + err
    assert out.count("✔") == 6 and "All checks passed" in out
    assert f"client_id={discord_fake.application_id}" in out
    assert "Traceback" not in err
    code, out, err = await run_check_process(
        tmp_path, discord_fake, runcomfy, sys.executable, "-m", "bot", "check", RUNCOMFY_API_TOKEN="nope-nope"
    )
    assert code == 1
    assert "✘ RunComfy token" in out and "1 check(s) failed" in out
    for text in (out, err):
        assert DISCORD_TOKEN not in text and RUNCOMFY_TOKEN not in text and "nope-nope" not in text


async def test_animate_bot_check_script(fakes: tuple[FakeDiscord, FakeRunComfy], tmp_path: Path) -> None:
    script = shutil.which("animate-bot", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the animate-bot script is not installed in this environment")
    discord_fake, runcomfy = fakes
    code, out, _ = await run_check_process(
        tmp_path, discord_fake, runcomfy, script, "check", DISCORD_TOKEN="bad-discord-token"
    )
    assert code == 1
    assert "✘ Discord token" in out


def test_unknown_subcommand_prints_usage(tmp_path: Path) -> None:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "chek"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "usage: animate-bot [run | check | migrate-to-postgres" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "check                 preflight" in proc.stdout


def test_remote_names_cannot_inject_terminal_escapes() -> None:
    assert check._printable("evil\x1b[2Jname\n") == "evil[2Jname"
    assert (
        check._snowflake("123") == 123 and check._snowflake("12a") is None and check._snowflake(None) is None
    )
