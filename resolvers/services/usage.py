"""What a provider says of a reply besides its text: its token counts and why it ended."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


NO_USAGE = Usage()

# Most tool calls one reply may ask for, and most characters of one call's arguments:
# a model that goes past them fails the turn (LLM_ERROR) rather than fill the process.
MAX_TOOL_CALLS = 64
MAX_TOOL_CALL_CHARS = 65_536


@dataclass(slots=True)
class ReplyReport:
    """Filled while a reply streams, from the provider's own figures when it sends any."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    # The tool calls the reply asks for, by their index in the reply: id, name and the
    # pieces of the arguments' JSON text as they streamed.
    calls: dict[int, list[str]] | None = None
    # The characters of each call so far (kept, not summed again at every piece).
    call_chars: dict[int, int] | None = None

    def add_call(self, index: object, call_id: object, name: object, arguments: object) -> None:
        """One streamed piece of a tool call (OpenAI's shape: the first piece of a call
        names it; later ones, found by index, add to its arguments)."""
        if self.calls is None or self.call_chars is None:
            self.calls, self.call_chars = {}, {}
        at = index if isinstance(index, int) and not isinstance(index, bool) else len(self.calls)
        if at not in self.calls and len(self.calls) >= MAX_TOOL_CALLS:
            raise ValueError(f"the model asked for more than {MAX_TOOL_CALLS} tool calls")
        call = self.calls.setdefault(at, ["", ""])
        if isinstance(call_id, str) and call_id:
            call[0] = call_id[:MAX_TOOL_CALL_CHARS]
        if isinstance(name, str) and name:
            call[1] = name[:MAX_TOOL_CALL_CHARS]
        if isinstance(arguments, str) and arguments:
            size = self.call_chars.get(at, 0) + len(arguments)
            if size > MAX_TOOL_CALL_CHARS:
                raise ValueError("a tool call's arguments are longer than the server keeps")
            self.call_chars[at] = size
            call.append(arguments)

    def tool_calls(self) -> list[tuple[str, str, str]]:
        """The whole calls, in the reply's order: (id, name, arguments as JSON text)."""
        if not self.calls:
            return []
        return [
            (call[0], call[1], "".join(call[2:]))
            for _, call in sorted(self.calls.items())
            if call[1]
        ]

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
