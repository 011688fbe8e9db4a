"""A call being played from a template: its fresh values, where it is, its live channels."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pbx_bridge.simulator.channels import Channel
from pbx_bridge.simulator.templates import CallTemplate

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

    @classmethod
    def create(cls, template: CallTemplate, wanted: CallValues, counters: IdCounters,
               rng: random.Random, start: float, system_name: str = "lab") -> LiveCall:
        values: dict[str, str] = {}
        first_uid = _first_uid_slot(template)
        ops = list(wanted.operators)
        forms = customer_forms(wanted.customer) if wanted.customer else {}
        for slot, (kind, original) in template.slots.items():
            if kind == "uid":
                if slot == first_uid and wanted.channel_id:
                    values[slot] = wanted.channel_id
                elif "-" in original and original.count("-") == 4:
                    values[slot] = str(uuid.uuid4())
                else:
                    values[slot] = f"{system_name}-{int(start)}.{counters.next_uniqueid()}"
            elif kind == "instance":
                values[slot] = counters.next_instance()
            elif kind == "operator":
                n = int(slot[2:])
                values[slot] = ops[n] if n < len(ops) else original
            elif kind == "customer":
                values[slot] = forms.get(original[0], original) if forms else original
            elif kind == "name":
                values[slot] = wanted.customer_name or original
            elif kind == "call_id":
                values[slot] = wanted.call_id
            elif kind == "action_id":
                pass
        values["aid_line"] = f"ActionID: {wanted.action_id}\r\n" if wanted.action_id else ""
        for slot, offset in template.datetime_slots:
            values[slot] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + offset))
        return cls(template=template, values=values, start=start)

    @property
    def done(self) -> bool:
        return self.index >= len(self.template.events)

    def next_offset(self) -> float:
        return self.template.events[self.index].offset

    def render_next(self) -> str:
        event = self.template.events[self.index]
        self.index += 1
        if event.ts_slot is not None:
            self.values[event.ts_slot] = f"{self.start + event.offset:.6f}"
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
            ))
        return out

    def fill(self, text: str) -> str:
        return text.format_map(self.values) if "{" in text or "}" in text else text

    def skip_to_hangup(self, now: float, loop_now: float, speed: float) -> bool:
        """A Hangup action: jump to the trace's hang-up phase, due now."""
        target = self.template.hangup_index
        if target < 0 or target < self.index:
            return False
        self.index = target
        offset = self.template.events[target].offset
        self.start = now - offset
        self.loop_start = loop_now - offset / speed
        return True


def _first_uid_slot(template: CallTemplate) -> str | None:
    """The slot of the Uniqueid in the template's first Newchannel (the originated channel)."""
    for event in template.events:
        if event.name == "Newchannel":
            for line in event.fmt.split("\r\n"):
                if line.startswith("Uniqueid: {") and line.endswith("}"):
                    return line[len("Uniqueid: {"):-1]
            break
    return None
