"""The external agents of a run: one recording client per system under test.

Both engines hold the conversations (who said what, in which session) and ask
`ExternalAgents.reply` for each of the bot's turns. Each agent's client is an
`LLMClient` over an `ExternalAgentProvider` sharing the run's cache and mode,
so replies are recorded before they are used, replayed without the bot, and
retried with backoff; its counters are kept apart from the model's, so the
manifest reports model calls and external calls separately.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from tiny_dsl.plan.model import Plan, Step
from tiny_dsl.runtime.cache import LLMCache
from tiny_dsl.runtime.client import ClientEvent, ClientStats, LLMClient, Mode
from tiny_dsl.runtime.providers.base import ChatRequest, Message
from tiny_dsl.runtime.providers.external import ENV_PLACEHOLDER, ExternalAgentProvider

__all__ = [
    "MAX_EXTERNAL_ATTEMPTS",
    "ExternalAgents",
    "add_line",
    "external_env_vars",
    "session_id",
]


# A bot that fails three times in a row is down, or broken for this conversation:
# the step fails at its statement rather than waiting through six backoffs.
MAX_EXTERNAL_ATTEMPTS = 3
ATTEMPT_GRACE_S = 5.0


class ExternalAgents:
    """The plan's external agents, by name, each behind its own recording client."""

    def __init__(
        self,
        plan: Plan,
        cache: LLMCache | None,
        *,
        mode: Mode = "normal",
        environ: Mapping[str, str] | None = None,
        on_event: Callable[[ClientEvent], None] | None = None,
        backoff_base_s: float = 1.0,
    ) -> None:
        self._clients = {
            agent.name: LLMClient(
                ExternalAgentProvider(agent, environ),
                cache,
                mode=mode,
                max_concurrency=plan.settings.max_concurrency,
                max_attempts=MAX_EXTERNAL_ATTEMPTS,
                # The provider's own timeout fires first, with the bot's url in its
                # message; this bounds a bot that trickles its answer out.
                attempt_timeout_s=agent.timeout_s + ATTEMPT_GRACE_S,
                on_event=on_event,
                backoff_base_s=backoff_base_s,
            )
            for agent in plan.external_agents
        }

    def __contains__(self, name: object) -> bool:
        return name in self._clients

    async def reply(
        self, name: str, session: str, conversation: Sequence[Message], purpose: str
    ) -> str:
        """The bot's next line in the conversation `session`, whose lines so far are
        `conversation` (the persona's are `user` messages, the bot's `assistant`)."""
        request = ChatRequest(
            messages=tuple(conversation),
            temperature=0.0,
            max_tokens=0,
            session=session,
            purpose=purpose,
        )
        response = await self._clients[name].complete(request)
        return response.text

    @property
    def stats(self) -> ClientStats:
        """Calls, cache hits, retries and failures over every external agent."""
        total = ClientStats()
        for client in self._clients.values():
            total.model_calls += client.stats.model_calls
            total.cache_hits += client.stats.cache_hits
            total.retries += client.stats.retries
            total.failures += client.stats.failures
        return total

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.provider.aclose()


def external_env_vars(plan: Plan) -> list[str]:
    """Names (never values) of the environment variables the external agents read."""
    names: dict[str, None] = {}
    for agent in plan.external_agents:
        for text in (agent.url, agent.request or "", *agent.headers.values()):
            names.update(dict.fromkeys(ENV_PLACEHOLDER.findall(text)))
    return list(names)


def session_id(plan: Plan, step: Step, agent_id: str) -> str:
    """The conversation's id, the same in every run of the same plan step (so a resumed
    run continues the same sessions) and different for every step and agent."""
    return f"{plan.settings.scenario}/{step.id}/{agent_id}/{step.hash[:12]}"


def add_line(conversation: list[Message], role: str, text: str) -> None:
    """Append a line; consecutive lines of one side are one message (a bot's reply
    followed by the next scripted question), as chat endpoints expect turns to alternate."""
    if conversation and conversation[-1].role == role:
        conversation[-1] = Message(role, f"{conversation[-1].content}\n\n{text}")
    else:
        conversation.append(Message(role, text))
