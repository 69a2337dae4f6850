"""The typed seams of the request pipeline: what the service is handed at configure.

A ``Pipeline`` is immutable and swapped whole between requests (a new model, new live
settings), so a request always runs with one consistent set of parts.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Optional, Protocol

from quant_llm_node.engine.llama_engine import GenerationResult
from quant_llm_node.grounding.index import GroundingResult
from quant_llm_node.reasoning.prompt import PromptBuilder
from quant_llm_node.reasoning.task import DecisionTask
from quant_llm_node.serving.roofline import efficiency, exceeds_roofline, roofline_tps

if TYPE_CHECKING:
    from quant_llm_node.serving.backends import Backend
    from quant_llm_node.serving.hazard_screen import HazardScreen


class Generator(Protocol):
    """Makes the decision text: the engine, a speculative decoder over it, or a remote engine."""

    def generate(self, prompt: str, max_tokens: int, grammar: Optional[str] = None,
                 temperature: float = 0.0,
                 should_stop: Optional[Callable[[str], bool]] = None,
                 on_text: Optional[Callable[[str, int], None]] = None,
                 min_room: int = 1) -> GenerationResult: ...


class Grounder(Protocol):
    """Maps a free-text goal to a map place (see quant_llm_node.grounding.PlaceIndex)."""

    def ground(self, text: str, lead_only: bool = False) -> GroundingResult: ...


@dataclass
class GroundingStatus:
    """Whether the grounder is there, and what runs it (for diagnostics)."""

    enabled: bool = False
    ready: Optional[bool] = None      # None: not configured yet
    error: str = ""
    providers: str = ""
    provider_fallbacks: str = ""


@dataclass(frozen=True)
class Roofline:
    """Decode roofline of the loaded model on this host: every token reads all weights once."""

    bytes_per_token: int
    bandwidth_gbps: float

    def values(self, decode_tps: float) -> dict[str, float]:
        """The roofline and the achieved efficiency at ``decode_tps``: at most 1, with
        ``roofline_exceeded`` True where the rate reads more than the bandwidth figure (the
        figure underestimates the host; serving.roofline)."""
        return {"memory_bandwidth_gbps": self.bandwidth_gbps,
                "roofline_decode_tps": roofline_tps(self.bytes_per_token, self.bandwidth_gbps),
                "roofline_efficiency": efficiency(decode_tps, self.bytes_per_token,
                                                  self.bandwidth_gbps),
                "roofline_exceeded": bool(decode_tps) and exceeds_roofline(
                    decode_tps, self.bytes_per_token, self.bandwidth_gbps)}


@dataclass(frozen=True)
class Pipeline:
    """The parts one request runs through; ``generator`` None means no model (fallback only)."""

    task: DecisionTask
    prompts: Optional[PromptBuilder] = None
    generator: Optional[Generator] = None
    grounder: Optional[Grounder] = None
    model_id: str = ""
    roofline: Optional[Roofline] = None
    backend: Optional["Backend"] = None   # remote / hybrid: the server side (None = local only)
    screen: Optional["HazardScreen"] = None  # asked before the decision (None = no screen)

    @property
    def deadline_aware(self) -> bool:
        """Whether ``generator.generate`` takes ``deadline_s`` (the remote and hybrid ones)."""
        return self.backend is not None and self.backend.passes_deadline

    def model_id_for(self, backend: str) -> str:
        """The model that made a text: the server's for remote answers, else the local one."""
        if backend == "remote" and self.backend is not None:
            return self.backend.generator.model_id
        return self.model_id

    def with_task(self, task: DecisionTask, prompts: Optional[PromptBuilder] = None) -> "Pipeline":
        """The same parts under another decision task (and its prompts, when given)."""
        return replace(self, task=task, prompts=prompts or self.prompts)

    def without_model(self) -> "Pipeline":
        """The same pipeline with no model: every request gets the marked fallback."""
        return replace(self, generator=None, model_id="", roofline=None, backend=None, screen=None)
