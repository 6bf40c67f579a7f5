"""What to generate: the one type for a job's generation options.

A leaf module (it imports nothing of the project), so storage persists it, bot.runcomfy sends it and
the cogs build it without an import cycle. A new API option (say `duration`) is a field here, a
migration for its column, and nothing else: NewJob/Job read and write the spec's fields through
`columns` / `from_columns`, and RunComfy's GenerationParams is built from it in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any


class Resolution(StrEnum):
    P480 = "480P"
    P1080 = "1080P"


@dataclass(frozen=True, slots=True)
class GenerationSpec:
    """What the user asked for, however they asked (slash command, button, modal, context menu)."""

    prompt: str
    negative_prompt: str | None = None
    resolution: Resolution = Resolution.P480
    template: str | None = None
    seed: int | None = None
    prompt_extend: bool = True

    def __post_init__(self) -> None:
        # Accept the plain strings stored rows and older callers use; an unknown value is a bug.
        if not isinstance(self.resolution, Resolution):
            object.__setattr__(self, "resolution", Resolution(self.resolution))

    def cleaned(self) -> GenerationSpec:
        """As stored for a job: prompts stripped, the template stripped and lower-case."""
        return GenerationSpec(
            prompt=self.prompt.strip(),
            negative_prompt=self.negative_prompt.strip() if self.negative_prompt else None,
            resolution=self.resolution,
            template=self.template.strip().lower() if self.template else None,
            seed=self.seed,
            prompt_extend=self.prompt_extend,
        )

    def columns(self) -> dict[str, Any]:
        """The spec as a job's columns (and NewJob's fields), by name."""
        return {name: getattr(self, name) for name in SPEC_FIELDS}

    @classmethod
    def from_columns(cls, values: Mapping[str, Any] | object) -> GenerationSpec:
        """The spec of a job row, a Job or a NewJob (anything with the fields, as keys or attributes)."""
        if isinstance(values, Mapping):
            return cls(**{name: values[name] for name in SPEC_FIELDS})
        return cls(**{name: getattr(values, name) for name in SPEC_FIELDS})


SPEC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(GenerationSpec))
