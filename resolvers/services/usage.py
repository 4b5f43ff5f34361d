"""What a provider says of a reply besides its text: its token counts and why it ended."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


NO_USAGE = Usage()


@dataclass(slots=True)
class ReplyReport:
    """Filled while a reply streams, from the provider's own figures when it sends any."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None

    def add_usage(self, input_tokens: object, output_tokens: object) -> None:
        """Counts as one chunk reports them (LangChain sums chunks; most send one)."""
        if isinstance(input_tokens, int) and isinstance(output_tokens, int):
            self.input_tokens = (self.input_tokens or 0) + input_tokens
            self.output_tokens = (self.output_tokens or 0) + output_tokens

    @property
    def usage(self) -> Usage | None:
        if self.input_tokens is None or self.output_tokens is None:
            return None
        return Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)
