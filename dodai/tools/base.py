"""The one interface every tool implements, shared by the tool implementations (R7.5) and the agent loop (R7.3).

A tool has a name, a one-paragraph description the model reads, a JSON-schema ``parameters`` object (the
OpenAI / Hugging Face function-calling convention: ``{"type": "object", "properties": {...}, "required": [...]}``)
and a ``call(arguments) -> str`` that does the work. ``call`` never raises for bad model output or hostile input:
it raises :class:`ToolError` with a one-line message, which the agent shows the model as the observation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ToolError(Exception):
    """A tool refused or failed; ``str(e)`` is one line fit to show the model (and the user)."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[[dict[str, Any]], str]
    max_output_chars: int = 2000
    meta: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        """The function-calling schema shown to the model (what chat templates call a "tool")."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def call(self, arguments: dict[str, Any]) -> str:
        """Check ``arguments`` against the schema's required keys and basic types, run, truncate the output."""
        if not isinstance(arguments, dict):
            raise ToolError(f"{self.name}: arguments must be a JSON object")
        props = self.parameters.get("properties", {})
        for key in self.parameters.get("required", []):
            if key not in arguments:
                raise ToolError(f"{self.name}: missing required argument '{key}'")
        for key, value in arguments.items():
            if key not in props:
                raise ToolError(f"{self.name}: unknown argument '{key}'")
            want = props[key].get("type")
            ok = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
                  "array": list, "object": dict}.get(want, object)
            if not isinstance(value, ok) or (want in ("integer", "number") and isinstance(value, bool)):
                raise ToolError(f"{self.name}: argument '{key}' must be of type {want}")
        out = self.fn(arguments)
        if len(out) > self.max_output_chars:
            out = out[: self.max_output_chars] + f"… [truncated, {len(out)} chars]"
        return out
