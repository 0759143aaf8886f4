"""What an operator may do from the console, each logged as an audit line naming who did it.

The actions are the Admin API's mutating calls on the same pipeline (``service/servicer.py``: ``Feedback``,
``SetMode``, ``ResetBaseline``), made durable the same way (a checkpoint before the answer when the service
keeps state).  An image held by another shard is acted on by that shard, through its Admin API with the
visitor's token (``shards.py``), as the Admin API passes a call on; the audit line names that shard.
Every attempt, done, refused or failed, writes one line to the ``baseliner.audit`` logger::

    console audit: who=olga role=operator action=feedback target=event:3f2a9c0d1e4b5a6f7081 result=ok from=127.0.0.1 \
accepted=executable:/usr/bin/curl
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from baseliner.models.baseline import Mode
from baseliner.models.errors import BaselinerError
from baseliner.service.auth import Principal
from baseliner.service.console.shards import ShardView
from baseliner.service.console.views import proto_state

audit_log = logging.getLogger("baseliner.audit")

ACTIONS = ("feedback", "mode", "reset")


class Refused(Exception):
    """An action the visitor may not take (HTTP 403)."""


@dataclass(frozen=True)
class Outcome:
    message: str  # for the page that follows
    image: str  # the image it concerned


def audit(who: Principal | None, action: str, target: str, result: str, client: str, detail: str = "") -> None:
    """One audit line (see the module docstring); values are quoted when they hold spaces."""
    def q(v: str) -> str:
        v = v.replace("\n", " ").replace("\r", " ")
        return f'"{v}"' if (" " in v or not v) else v

    name, role = (who.name, who.role) if who is not None else ("-", "none")
    line = (f"console audit: who={q(name)} role={role} action={action} target={q(target)} result={result} "
            f"from={q(client)}")
    audit_log.info(line + (f" {detail}" if detail else ""))


class Actions:
    """Runs actions on a :class:`baseliner.service.pipeline.Pipeline`; ``durable`` makes a change durable."""

    def __init__(self, pipeline: Any, durable: Callable[[], Awaitable[None]] | None = None,
                 shards: ShardView | None = None) -> None:
        self.pipeline = pipeline
        self.durable = durable
        self.shards = shards or ShardView(None)

    async def run(self, who: Principal, action: str, target: str, value: str, client: str,
                  token: str = "") -> Outcome:
        """Do ``action`` on ``target`` (an event id for feedback, an image key otherwise); raise :class:`Refused`
        for a visitor who may not act, BaselinerError when it cannot be done.  ``token``: the visitor's, for
        the shard that holds the target when another one does."""
        label = f"event:{target}" if action == "feedback" else f"image:{target}"
        if not who.may_act:
            audit(who, action, label, "denied", client, "reason=viewer")
            raise Refused(f"{who.name} is a viewer: only operators may change baselines")
        try:
            elsewhere = await self._elsewhere(action, target, value, token)
            if elsewhere is not None:
                outcome, detail = elsewhere
            else:
                outcome, detail = self._do(action, target, value)
                if self.durable is not None:
                    await self.durable()
        except BaselinerError as e:
            audit(who, action, label, "failed", client, f'reason="{e}"')
            raise
        audit(who, action, label, "ok", client, detail)
        return outcome

    async def _elsewhere(self, action: str, target: str, value: str, token: str) -> tuple[Outcome, str] | None:
        """The action done by the other shard that holds its target (None: this shard holds it).  The holder
        makes it durable before it answers."""
        if self.shards.single:
            return None
        if action == "feedback":
            if target in self.pipeline.recent:
                return None
            shard, answer = await self.shards.feedback(target, token)
            key, items = answer.baseline.key, list(answer.accepted_items)
            text = ", ".join(items) if items else "no novel items; its rates were learnt"
            return (Outcome(f"Accepted into the baseline of {key} (held by shard {shard}): {text}.", key),
                    f"image={key} shard={shard} accepted={','.join(items) or '-'}")
        holder = await self.shards.holder(target)
        if holder is None:
            return None
        if action == "mode":
            mode = Mode(value)
            b = await self.shards.set_mode(holder, target, mode.value, token)
            return (Outcome(f"{b.key}: mode {mode.value}, now {proto_state(b.state)} (held by shard {holder.name}).",
                            b.key), f"mode={mode.value} shard={holder.name}")
        if action == "reset":
            b = await self.shards.reset(holder, target, token)
            return (Outcome(f"{b.key}: reset by shard {holder.name}; it learns again from its next window.", b.key),
                    f"shard={holder.name}")
        raise ValueError(f"unknown action {action!r}")

    def _do(self, action: str, target: str, value: str) -> tuple[Outcome, str]:
        p = self.pipeline
        if action == "feedback":
            b, items = p.feedback(target)
            accepted = [f"{i.kind}:{i.value}" for i in items]
            text = ", ".join(accepted) if accepted else "no novel items; its rates were learnt"
            return Outcome(f"Accepted into the baseline of {b.key}: {text}.", b.key), \
                f"image={b.key} accepted={','.join(accepted) or '-'}"
        if action == "mode":
            mode = Mode(value)  # ValueError for an unknown mode: checked by the caller
            b = p.set_mode(target, mode.value)
            return Outcome(f"{b.key}: mode {mode.value}, now {getattr(b.state, 'value', b.state)}.", b.key), \
                f"mode={mode.value}"
        if action == "reset":
            b = p.reset(target)
            return Outcome(f"{b.key}: reset; it learns again from its next window.", b.key), ""
        raise ValueError(f"unknown action {action!r}")
