"""What history a turn sends: the last `HISTORY_WINDOW` messages, cut oldest first to an
estimate of `HISTORY_MAX_TOKENS` tokens with LangChain's `trim_messages`, so a session
that grew long never makes its turns fail. Messages go whole; only a newest message
larger than the budget by itself is sent cut (its end kept), never dropped.

The estimate is LangChain's `count_tokens_approximately` (4 characters a token, 3 tokens
a message): it needs no tokenizer and fits every provider, at the price of being an
estimate (docs/usage.md says how close it came to the provider's own count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately, trim_messages

from resolvers.services.history import Role, StoredMessage, position_of, to_model

# A message cut to fit is cut at these boundaries (characters), keeping its end.
_CUT_CHARS = 64


@dataclass(frozen=True, slots=True)
class ContextPlan:
    """The history a turn sends, oldest first, and how it was chosen."""

    messages: list[BaseMessage]
    message_ids: list[str]
    # Earlier messages of the session left out (beyond the window, or over the budget).
    trimmed: int
    # The estimate of the system prompt, the summary and the history together.
    estimated_tokens: int
    # The summary of trimmed history, sent first (a system message), when one is kept.
    summary: str | None = None
    # The position of the oldest message sent (None: none sent).
    oldest_sent: int | None = None

    def prompt(self, system_prompt: str, *asked: BaseMessage) -> list[BaseMessage]:
        """What the model is sent: the system prompt, the summary, the history, then what
        the turn asks (the user's message, or tools' results)."""
        head: list[BaseMessage] = [SystemMessage(content=system_prompt)]
        if self.summary is not None:
            head.append(SystemMessage(content=self.summary))
        return [*head, *self.messages, *asked]


def plan_context(
    system_prompt: str,
    window: Sequence[StoredMessage],
    *,
    total: int,
    max_tokens: int,
    summary: StoredMessage | None = None,
    keep: Sequence[StoredMessage] = (),
) -> ContextPlan:
    """The history to send from `window` (the last messages, oldest first, of `total`),
    after `summary` when one is given (its tokens count against the budget). `keep`
    goes last and whole, whatever the budget: the reply whose tool calls the turn
    answers, and the results after it (a result is refused without its call)."""
    head = [SystemMessage(content=summary.content)] if summary is not None else []
    # SYSTEM elements of the list are summaries: the one that holds goes first (above);
    # any other (a stale one, which summarized messages rewound since) is never sent.
    kept_ids = {m.id for m in keep}
    window = [m for m in window if m.role is not Role.SYSTEM and m.id not in kept_ids]
    window = _whole_calls(window)
    pinned = [to_model(m) for m in keep]
    budget = max_tokens - (count_tokens_approximately(head) if head else 0)
    budget = max(1, budget - sum(estimate(m) for m in keep))
    system = SystemMessage(content=system_prompt)
    if sum(estimate(m) for m in window) <= budget:
        # All of it fits (the common case): no trimming, one message object each.
        messages = [to_model(m) for m in window] + pinned
        ids = [m.id for m in window] + [m.id for m in keep]
        return _plan(messages, ids, total, [system, *head], summary)
    tagged = [to_model(m, id=m.id) for m in window]
    # Whole messages, newest first back; only when the newest alone is over the budget
    # is it sent cut (its end kept).
    kept = trim_messages(
        tagged, max_tokens=budget, token_counter=count_tokens_approximately, strategy="last"
    )
    if not kept and tagged:
        kept = trim_messages(
            tagged[-1:],
            max_tokens=budget,
            token_counter=count_tokens_approximately,
            strategy="last",
            allow_partial=True,
            text_splitter=_cut,
        )
    # A tool result whose call was cut off goes too: no provider takes it alone.
    while kept and kept[0].type == "tool":
        kept = kept[1:]
    # The provider gets plain messages: the ids are ours.
    ids = [str(m.id) for m in kept] + [m.id for m in keep]
    messages = [m.model_copy(update={"id": None}) for m in kept] + pinned
    return _plan(messages, ids, total, [system, *head], summary)


def _plan(
    messages: list[BaseMessage],
    ids: list[str],
    total: int,
    head: list[BaseMessage],
    summary: StoredMessage | None,
) -> ContextPlan:
    positions = [p for p in (position_of(i) for i in ids) if p is not None]
    return ContextPlan(
        messages=messages,
        message_ids=ids,
        trimmed=max(0, total - len(messages) - (1 if summary is not None else 0)),
        estimated_tokens=count_tokens_approximately([*head, *messages]),
        summary=summary.content if summary is not None else None,
        oldest_sent=min(positions) if positions else None,
    )


_ROLE_NAMES = {
    Role.USER: "user",
    Role.ASSISTANT: "assistant",
    Role.SYSTEM: "system",
    Role.TOOL: "tool",
}


def estimate(message: StoredMessage) -> int:
    """`count_tokens_approximately` of one plain-text message, without building it (a
    test holds the two equal); a reply's tool calls and a result's call id count too."""
    if message.tool_calls or message.tool_call_id:
        return count_tokens_approximately([to_model(message)])
    return math.ceil((len(message.content) + len(_ROLE_NAMES[message.role])) / 4) + 3


def _whole_calls(window: list[StoredMessage]) -> list[StoredMessage]:
    """The window without tool results at its start whose call is older than the window
    (a provider refuses a result without its call)."""
    start = 0
    while start < len(window) and window[start].role is Role.TOOL:
        start += 1
    return window[start:] if start else window


def _cut(text: str) -> list[str]:
    return [text[i : i + _CUT_CHARS] for i in range(0, len(text), _CUT_CHARS)]


def is_context_too_long(exc: BaseException) -> bool:
    """Whether a provider refused a request for its length (Groq and OpenAI say
    `context_length_exceeded`; a 413 is a request too large)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "status_code", None) == 413:
            return True
        body = getattr(current, "body", None)
        code = getattr(current, "code", None)
        if isinstance(body, dict):
            error = body.get("error", body)
            code = code or (error.get("code") if isinstance(error, dict) else None)
        text = str(current).lower()
        if code == "context_length_exceeded" or "context_length_exceeded" in text:
            return True
        if "reduce the length" in text or "maximum context length" in text:
            return True
        current = current.__cause__ or current.__context__
    return False
