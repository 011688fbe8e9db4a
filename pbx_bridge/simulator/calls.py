"""A call being played from a template: its fresh values, where it is, its live channels."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from pbx_bridge.simulator.channels import Channel, audio_states
from pbx_bridge.simulator.media import ChannelState
from pbx_bridge.simulator.templates import CallTemplate, Pause

CUSTOMER_NAMES = (
    "Иван Петров", "Ольга Смирнова", "Анна Сидорова", "Сергей Кузнецов", "Мария Иванова",
    "Ivan Petrov", "Olga", "ООО Ромашка",
)


@dataclass
class IdCounters:
    """Asterisk's global counters: the Uniqueid sequence and the Local channel instance."""

    uniqueid: int = 1000
    local_instance: int = 0x100

    def next_uniqueid(self) -> int:
        self.uniqueid += 1
        return self.uniqueid

    def next_instance(self) -> str:
        self.local_instance += 1
        return f"{self.local_instance & 0xFFFFFFFF:08x}"


def random_customer(rng: random.Random) -> str:
    """A Russian number in E.164: a mobile (+79...) or a Moscow landline (+749[59]...)."""
    if rng.random() < 0.6:
        return "+79" + "".join(rng.choices("0123456789", k=9))
    return "+749" + rng.choice("59") + "".join(rng.choices("0123456789", k=7))


def customer_forms(e164: str) -> dict[str, str]:
    """The ways a lab trace writes one Russian number: +7..., 7..., 8..."""
    national = e164[2:]
    return {"+": e164, "7": "7" + national, "8": "8" + national}


@dataclass
class CallValues:
    customer: str = ""  # E.164
    customer_name: str = ""
    operators: Sequence[str] = ()
    call_id: str = ""
    channel_id: str = ""  # Uniqueid of the first channel (Originate's ChannelId)
    action_id: str = ""


@dataclass
class LiveCall:
    template: CallTemplate
    values: dict[str, str]
    start: float  # epoch seconds of the first event (Timestamps are start + offset)
    index: int = 0
    serial: int = 0
    loop_start: float = 0.0  # event loop time of the first event (offsets / speed after it)
    version: int = 0  # bumped when rescheduled; stale heap entries are skipped
    # Waits at the template's pauses for its client's action (else goes on as the trace did).
    interactive: bool = False
    # This call's own event offsets, once an action or a Hangup moved its later events.
    moved: list[float] | None = None
    # (Asterisk time, channel table) each time the table changed, for the sent events.
    trail: list[tuple[float, dict[str, Channel]]] = field(default_factory=list)

    @classmethod
    def create(cls, template: CallTemplate, wanted: CallValues, counters: IdCounters,
               rng: random.Random, start: float, system_name: str = "lab") -> LiveCall:
        values: dict[str, str] = {}
        first_uid = _first_uid_slot(template)
        for slot, (kind, original) in template.slots.items():
            value = slot_value(slot, kind, original, wanted, counters, start, system_name,
                               first_uid=slot == first_uid)
            if value is not None:
                values[slot] = value
        values["aid_line"] = f"ActionID: {wanted.action_id}\r\n" if wanted.action_id else ""
        for slot, offset in template.datetime_slots:
            values[slot] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + offset))
        return cls(template=template, values=values, start=start)

    @property
    def done(self) -> bool:
        return self.index >= len(self.template.events)

    def offset(self, index: int) -> float:
        return self.moved[index] if self.moved is not None else self.template.events[index].offset

    def next_offset(self) -> float:
        return self.offset(self.index)

    @property
    def pause(self) -> Pause | None:
        """The pause the call is waiting at (interactive calls only)."""
        if not self.interactive:
            return None
        return next((p for p in self.template.pauses if p.index == self.index), None)

    def render_next(self) -> str:
        event = self.template.events[self.index]
        at = self.start + self.offset(self.index)
        state = self.template.states[self.index]
        if not self.trail or self.trail[-1][1] is not state:
            self.trail.append((at, state))
        self.index += 1
        if event.ts_slot is not None:
            self.values[event.ts_slot] = f"{at:.6f}"
        return event.fmt.format_map(self.values)

    def channels(self) -> list[Channel]:
        """Live channels now (after the events sent so far), values filled in."""
        if self.index == 0:
            return []
        out = []
        for channel in self.template.states[self.index - 1].values():
            fill = self.fill
            out.append(Channel(
                fields={k: fill(v) for k, v in channel.fields.items()},
                variables=[fill(v) for v in channel.variables],
                application=fill(channel.application),
                application_data=fill(channel.application_data),
                bridge_id=fill(channel.bridge_id),
                created=self.start + channel.created,
                moh=channel.moh,
            ))
        return out

    def has_channel(self, name: str) -> bool:
        if self.index == 0 or self.done:
            return False
        return any(self.fill(ch.fields.get("Channel", "")) == name
                   for ch in self.template.states[self.index - 1].values())

    def fill(self, text: str) -> str:
        return text.format_map(self.values) if "{" in text or "}" in text else text

    def now(self, loop_now: float, speed: float) -> float:
        """Asterisk's clock for this call: its Timestamps run `speed` times faster than the loop."""
        return self.start + (loop_now - self.loop_start) * speed

    def history(self) -> list[tuple[float, dict[str, ChannelState]]]:
        """Who was in which bridge, from the events sent so far (see media.spans)."""
        out: list[tuple[float, dict[str, ChannelState]]] = []
        for at, state in self.trail:
            audio = audio_states(state, self.fill)
            if not out or out[-1][1] != audio:
                out.append((at, audio))
        return out

    def gone_at(self, channel: str) -> float | None:
        """When the events sent so far hung the channel up."""
        seen = False
        for at, state in self.trail:
            present = any(self.fill(ch.fields.get("Channel", "")) == channel for ch in state.values())
            if present:
                seen = True
            elif seen:
                return at
        return None

    def move_from(self, index: int, at: float) -> None:
        """Event `index` and the ones after it happen from Asterisk time `at` on (their gaps as
        in the trace); the events before keep their times."""
        moved = self.moved if self.moved is not None else [e.offset for e in self.template.events]
        delta = (at - self.start) - moved[index]
        self.moved = moved[:index] + [o + delta for o in moved[index:]]

    def skip_to_hangup(self, now: float) -> bool:
        """A Hangup action: jump to the trace's hang-up phase, from `now` (Asterisk time)."""
        target = self.template.hangup_index
        if target < 0 or target < self.index:
            return False
        self.index = target
        self.move_from(target, now)
        return True

    def switch(self, template: CallTemplate, wanted: CallValues, counters: IdCounters,
               system_name: str) -> None:
        """Go on with a variant of the same call (built on this template's slots): the slots it
        adds get fresh values."""
        for slot, (kind, original) in template.slots.items():
            if slot not in self.values:
                value = slot_value(slot, kind, original, wanted, counters, self.start, system_name)
                if value is not None:
                    self.values[slot] = value
        for slot, offset in template.datetime_slots:
            self.values.setdefault(slot, time.strftime("%Y-%m-%d %H:%M:%S",
                                                       time.gmtime(self.start + offset)))
        if self.moved is not None:
            self.moved = self.moved[: self.index] + [e.offset for e in template.events[self.index:]]
        self.template = template


def slot_value(slot: str, kind: str, original: str, wanted: CallValues, counters: IdCounters,
               start: float, system_name: str, *, first_uid: bool = False) -> str | None:
    """A fresh value for one slot of a template."""
    if kind == "uid":
        if first_uid and wanted.channel_id:
            return wanted.channel_id
        if "-" in original and original.count("-") == 4:
            return str(uuid.uuid4())
        return f"{system_name}-{int(start)}.{counters.next_uniqueid()}"
    if kind == "instance":
        return counters.next_instance()
    if kind == "operator":
        n = int(slot[2:])
        return wanted.operators[n] if n < len(wanted.operators) else original
    if kind == "customer":
        forms = customer_forms(wanted.customer) if wanted.customer else {}
        return forms.get(original[0], original) if forms else original
    if kind == "name":
        return wanted.customer_name or original
    if kind == "call_id":
        return wanted.call_id
    return None


def _first_uid_slot(template: CallTemplate) -> str | None:
    """The slot of the Uniqueid in the template's first Newchannel (the originated channel)."""
    for event in template.events:
        if event.name == "Newchannel":
            for line in event.fmt.split("\r\n"):
                if line.startswith("Uniqueid: {") and line.endswith("}"):
                    return line[len("Uniqueid: {"):-1]
            break
    return None
