"""storage.spec: one frozen value for what to generate, persisted by storage and sent by the client."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot.runcomfy import GenerationParams
from storage.db import Database
from storage.jobs import JobRepository, NewJob
from storage.spec import SPEC_FIELDS, GenerationSpec, Resolution


def test_resolution_is_an_enum_that_reads_as_the_api_value() -> None:
    spec = GenerationSpec(prompt="a cat", resolution="1080P")  # type: ignore[arg-type]
    assert spec.resolution is Resolution.P1080 and spec.resolution == "1080P"
    assert f"{spec.resolution}" == "1080P"
    with pytest.raises(ValueError):
        GenerationSpec(prompt="a cat", resolution="720P")  # type: ignore[arg-type]


def test_the_spec_is_frozen() -> None:
    spec = GenerationSpec(prompt="a cat")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.prompt = "a dog"  # type: ignore[misc]


def test_cleaned_is_what_a_job_stores() -> None:
    spec = GenerationSpec(prompt="  a cat \n", negative_prompt=" blur ", template=" Squish ", seed=3)
    assert spec.cleaned() == GenerationSpec(prompt="a cat", negative_prompt="blur", template="squish", seed=3)


async def test_a_job_round_trips_its_spec(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "s.db")
    try:
        spec = GenerationSpec(
            prompt="a cat",
            negative_prompt="blur",
            resolution=Resolution.P1080,
            template="poke",
            seed=9,
            prompt_extend=False,
        )
        new = NewJob.from_spec(spec, guild_id=1, channel_id=2, user_id=3, cost=2, upload_limit=1 << 20)
        assert new.spec == spec
        jobs = JobRepository(db)
        async with db.transaction() as tx:
            job_id = await jobs.insert(tx, new)
        job = await jobs.get(job_id)
        assert job is not None
        assert job.spec == spec and job.resolution is Resolution.P1080
    finally:
        await db.close()


def test_generation_params_are_built_from_the_spec() -> None:
    spec = GenerationSpec(prompt="a cat", resolution=Resolution.P1080, template="poke", seed=9)
    params = GenerationParams.from_spec(spec, "https://cdn.example/cat.png")
    payload = params.to_payload()
    assert {name: payload.get(name) for name in SPEC_FIELDS} == {**spec.columns(), "negative_prompt": None}
    assert payload["img_url"] == "https://cdn.example/cat.png" and payload["resolution"] == "1080P"
    assert payload["duration"] == 5
