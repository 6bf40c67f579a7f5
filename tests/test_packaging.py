"""The image, the locks, CI and the README agree with each other and with the code (issue #16).

There is no Docker engine here, so the Dockerfile is checked for the properties that matter."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dockerfile() -> list[str]:
    """Instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def readme_block_after(marker: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(marker)
    block = re.search(r"```\n(.*?)```", readme[start:], re.S)
    assert block is not None
    return block.group(1).strip()


def test_dockerfile_pins_the_base_and_caches_dependencies() -> None:
    lines = dockerfile()
    base = next(line for line in lines if line.startswith("FROM "))
    assert re.fullmatch(r"FROM python:3\.12(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY ")]
    runs = [i for i, line in enumerate(lines) if line.startswith("RUN ")]
    # The lock is copied and installed before any code is copied: its layer survives code changes.
    assert lines[copies[0]] == "COPY requirements.lock ./"
    assert "pip install --require-hashes -r requirements.lock" in lines[runs[0]]
    assert runs[0] < copies[1]
    assert any("pip install --no-deps ." in lines[i] for i in runs[1:])
    assert any(line.startswith("USER ") and "root" not in line for line in lines)
    healthcheck = next(line for line in lines if line.startswith("HEALTHCHECK "))
    assert "/healthz" in healthcheck and "METRICS_PORT" in healthcheck and "curl" not in healthcheck


def test_every_copy_source_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for line in dockerfile():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY source {source} is missing"
                assert source not in ignored, f"{source} is in .dockerignore"
    for heavy in (".git", ".venv", "data", "tests", "bench", ".env"):
        assert heavy in ignored


def test_the_image_health_check_is_on_in_compose() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert re.search(r'METRICS_PORT: "?9100"?', compose)
    assert "METRICS_HOST: 0.0.0.0" in compose
    assert '"127.0.0.1:9100:9100"' in compose  # published on the host's loopback only


def _compose_services() -> dict[str, str]:
    """Each service's block of docker-compose.yml (no YAML parser here: it is no dependency)."""
    text = (ROOT / "docker-compose.yml").read_text()
    services = text.split("services:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    blocks = re.split(r"^  ([a-z0-9-]+):.*$", services, flags=re.M)
    return dict(zip(blocks[1::2], blocks[2::2], strict=True))


def test_compose_fleet_profile_runs_postgres_and_one_process_per_shard() -> None:
    services = _compose_services()
    assert "profiles" not in services["animate-bot"]  # `docker compose up` is the single bot, as before
    assert 'profiles: ["fleet"]' in services["postgres"] and "image: postgres:16" in services["postgres"]
    assert "animate-postgres:/var/lib/postgresql/data" in services["postgres"]
    assert "pg_isready" in services["postgres"]
    fleet = [name for name in services if name.startswith("fleet-")]
    assert fleet == ["fleet-0", "fleet-1", "fleet-2"]
    text = (ROOT / "docker-compose.yml").read_text()
    assert 'SHARD_COUNT: "3"' in services["fleet-0"] and 'DISCORD_REST_RATE: "16"' in services["fleet-0"]
    assert "DATABASE_URL: postgresql://" in services["fleet-0"]
    assert "condition: service_healthy" in services["fleet-0"]
    ports = []
    for n, name in enumerate(fleet):
        block = services[name]
        assert f'SHARD_IDS: "{n}"' in block
        assert "<<: *fleet-bot" in block or name == "fleet-0"
        port = re.search(r'METRICS_PORT: "(\d+)"', block)
        assert port is not None and f'"127.0.0.1:{port.group(1)}:{port.group(1)}"' in block
        ports.append(port.group(1))
    assert len(set(ports)) == 3 and "9100" not in ports
    assert "animate-postgres:" in text.split("\nvolumes:\n", 1)[1]


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")


def test_locks_pin_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    test = {_name(r) for r in project["optional-dependencies"]["test"]}
    lock, test_lock = _pins("requirements.lock"), _pins("requirements-test.lock")
    normalised = {k.replace("_", "-").replace(".", "-"): v for k, v in lock.items()}
    normalised_test = {k.replace("_", "-").replace(".", "-"): v for k, v in test_lock.items()}
    assert runtime <= set(normalised), runtime - set(normalised)
    assert runtime | test <= set(normalised_test)
    # The image and CI run the same versions of everything the bot uses.
    assert {k: normalised_test[k] for k in normalised} == normalised
    for name in ("requirements.lock", "requirements-test.lock"):
        entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / name).read_text().split("\n", 2)[2])
        for entry in entries:
            if "==" in entry:
                assert "--hash=sha256:" in entry, entry.splitlines()[0]
        # One version per package, whatever the Python: 3.11 (CI) tests what 3.12 (image) runs.
        names = [m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", (ROOT / name).read_text(), re.M)]
        assert len(names) == len(set(names)), name


def test_ci_runs_exactly_the_readme_test_command_from_the_lock() -> None:
    command = readme_block_after("## Tests")
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == command
    assert "--require-hashes -r requirements-test.lock" in command
    assert "pip install -q --no-deps -e ." in command


def test_readme_run_commands_use_the_lock_and_the_check() -> None:
    block = readme_block_after("## Running it")
    assert "--require-hashes -r requirements.lock" in block and "--no-deps ." in block
    assert "animate-bot check" in block
    readme = (ROOT / "README.md").read_text()
    assert "uv pip compile pyproject.toml" in readme  # how to refresh the locks
    assert re.search(r"The whole suite takes about \d", readme)


def test_layout_lists_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    listed = set(re.findall(r"^\| `([^`]+)`", layout, re.M)) | set(re.findall(r"`([a-z_/]+\.py)`", layout))
    for package in ("bot", "cogs", "storage"):
        for module in sorted((ROOT / package).glob("*.py")):
            if module.name == "__init__.py":
                continue
            path = f"{package}/{module.name}"
            assert path in listed, f"{path} is missing from README's Layout table"
