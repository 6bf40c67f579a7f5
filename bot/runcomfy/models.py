"""What goes to and comes back from RunComfy: parameters, submissions, statuses, results, phases."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from storage.spec import GenerationSpec


@dataclass(frozen=True, slots=True)
class GenerationParams:
    prompt: str
    img_url: str
    negative_prompt: str | None = None
    resolution: str = "480P"
    template: str | None = None
    seed: int | None = None
    prompt_extend: bool = True
    duration: int = 5

    @classmethod
    def from_spec(cls, spec: GenerationSpec, img_url: str) -> GenerationParams:
        """The one place a job's spec becomes a submit (RunComfy's `duration` keeps its default)."""
        return cls(img_url=img_url, **spec.columns())

    def to_payload(self) -> dict[str, Any]:
        """The JSON body for a submit; ``None`` fields are omitted."""
        payload: dict[str, Any] = {
            "prompt": self.prompt,
            "img_url": self.img_url,
            "negative_prompt": self.negative_prompt,
            "resolution": self.resolution,
            "template": self.template,
            "seed": self.seed,
            "prompt_extend": self.prompt_extend,
            "duration": self.duration,
        }
        return {key: value for key, value in payload.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Submission:
    request_id: str
    status_url: str | None
    result_url: str | None
    cancel_url: str | None


class Phase(StrEnum):
    """A RunComfy status word, normalised. The words are not settled (the seed document, RunComfy's
    CLI and its docs disagree), so every known spelling maps here and anything else is UNKNOWN."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # on /status: finished, /result decides; on /result: a video is there
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


# Lower-cased words; RunComfy's CLI treats completed|succeeded|failed|cancelled|canceled as terminal on
# both endpoints and succeeded|completed on /result as success.
_WORDS: Final[Mapping[str, Phase]] = {
    "in_queue": Phase.QUEUED,
    "queued": Phase.QUEUED,
    "in_progress": Phase.RUNNING,
    "running": Phase.RUNNING,
    "completed": Phase.SUCCEEDED,
    "succeeded": Phase.SUCCEEDED,
    "failed": Phase.FAILED,
    "cancelled": Phase.CANCELLED,
    "canceled": Phase.CANCELLED,
}
SUCCESS_WORDS: Final = frozenset(w for w, p in _WORDS.items() if p is Phase.SUCCEEDED)


def normalize_status(word: str, *, error: str | None = None) -> Phase:
    """The phase a status word means; an ``error`` field means failure unless the word says cancelled."""
    phase = _WORDS.get(word.strip().lower(), Phase.UNKNOWN)
    if error is not None and phase is not Phase.CANCELLED:
        return Phase.FAILED
    return phase


@dataclass(frozen=True, slots=True)
class JobStatus:
    status: str
    """The raw word, lower-cased (``in_queue``, ``Completed`` -> ``completed``, or anything else); empty
    when RunComfy sent only an ``error``. Decide on :attr:`phase`, log this."""
    queue_position: int | None
    error: str | None = None

    @property
    def phase(self) -> Phase:
        return normalize_status(self.status, error=self.error)


@dataclass(frozen=True, slots=True)
class JobResult:
    status: str
    """The raw word, lower-cased (``succeeded``, ``completed``, ``failed``, ...); empty when RunComfy sent
    only an ``error``. Decide on :attr:`phase`, log this."""
    video_urls: tuple[str, ...]
    error: str | None
    created_at: str | None
    finished_at: str | None

    @property
    def phase(self) -> Phase:
        """SUCCEEDED only with a video: a "success" without one is a failure (see :attr:`no_video`)."""
        phase = normalize_status(self.status, error=self.error)
        if phase is Phase.SUCCEEDED and not self.video_urls:
            return Phase.FAILED
        return phase

    @property
    def no_video(self) -> bool:
        """RunComfy said it succeeded but sent no video URL."""
        return self.error is None and self.status in SUCCESS_WORDS and not self.video_urls


@dataclass(frozen=True, slots=True)
class CancelResult:
    status: str | None
    outcome: str | None
    cancelled: bool
