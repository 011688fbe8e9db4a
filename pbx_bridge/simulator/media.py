"""What the simulated PBX's parties say, and what a channel reads and hears at each moment.

Every party has its own voice, a function of the absolute sample clock (sample n = Asterisk time
n / 8000 s), so a recording made on any channel, at any time, holds exactly the samples a test
can compute again: the customer speaks the customer side of the lab's real recording, each
operator the operator side, started at a point of its own, and under each voice lies a quiet
pilot tone of the party's own frequency (so silence in the speech still tells who it is).

Who hears whom comes from the channels' bridges as the events describe them: a channel hears
the others in its bridge, and a Local channel half passes on what its other half hears (that is
how `Local/102@transfer-...;1` in the customer's bridge carries operator 102). A channel on hold
music hears only the music.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 8000
SAMPLE_AUDIO = Path(__file__).resolve().parent / "data" / "recording-sample.raw"
PILOT_AMPLITUDE = 300.0
MOH = "moh"
CUSTOMER = "customer"
Samples = npt.NDArray[np.int16]

_CUSTOMER_CHANNEL = re.compile(r"^(?:PJSIP|SIP|IAX2|DAHDI)/trunk\b|^Local/cust@customer-.*;1$"
                               r"|^Local/\d{5,}@pstn-.*;1$")
_OPERATOR_CHANNEL = re.compile(r"^(?:PJSIP|SIP)/(\d{2,6})-|^Local/(\d{2,6})@(?:operators|op-phone)-.*;1$")


def party_of(channel: str) -> str | None:
    """Whose voice a channel reads: the customer, `op:<ext>`, or None for a channel that only
    passes audio on (the other Local halves: the transfer's Local pair, a phone's dialplan side)."""
    if _CUSTOMER_CHANNEL.search(channel):
        return CUSTOMER
    found = _OPERATOR_CHANNEL.search(channel)
    if found:
        return f"op:{found.group(1) or found.group(2)}"
    return None


def local_partner(channel: str) -> str | None:
    """`Local/x@ctx-0001;1` <-> `Local/x@ctx-0001;2`."""
    if channel.startswith("Local/") and channel[-2:] in (";1", ";2"):
        return channel[:-1] + ("2" if channel.endswith("1") else "1")
    return None


@cache
def _speech() -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    data = np.frombuffer(SAMPLE_AUDIO.read_bytes(), dtype="<i2").reshape(-1, 2)
    return data[:, 0].astype(np.int32), data[:, 1].astype(np.int32)


def _pilot_hz(party: str) -> float:
    # Not whole numbers of Hz: a whole-Hz tone repeats every second (every 0.1 s for 310 Hz),
    # and a recording placed a few periods off would still match.
    if party == CUSTOMER:
        return 310.37
    if party == MOH:
        return 440.0
    ext = party.partition(":")[2]
    digits = int(ext) if ext.isdigit() else sum(map(ord, ext))
    return 520.13 + 60.0 * (digits % 25)


# The pilot's loudness swells and fades over this many samples (7.3 s), so no stretch of a
# voice repeats within minutes.
_SWELL = 58_400


def voice(party: str, first: int, count: int) -> npt.NDArray[np.int32]:
    """`count` samples of the party's voice from absolute sample `first` (int32, unclipped)."""
    n = np.arange(first, first + count, dtype=np.int64)
    # Phases from n modulo a whole number of periods of both terms would lose precision at
    # epoch-sized n; these moduli keep the arguments small and the signal exact per n.
    cycle = n % (SAMPLE_RATE * 100)  # 100 s: a whole number of periods of every pilot
    swell = 1.0 + 0.5 * np.sin(2 * np.pi * (n % _SWELL) / _SWELL)
    pilot = np.rint(PILOT_AMPLITUDE * swell * np.sin(2 * np.pi * _pilot_hz(party) * cycle
                                                     / SAMPLE_RATE)).astype(np.int32)
    if party == MOH:  # hold music: a plain chord, nobody speaking
        return pilot * 6
    operator_side, customer_side = _speech()
    if party == CUSTOMER:
        source, offset = customer_side, 0
    else:
        ext = party.partition(":")[2]
        source = operator_side
        offset = (int(ext) if ext.isdigit() else len(ext)) * 2777
    return source[(n + offset) % len(source)] + pilot


def mix(parties: Iterable[str], first: int, count: int) -> Samples:
    """The parties' voices summed as a bridge mixes them, clipped to 16 bits."""
    total = np.zeros(count, dtype=np.int32)
    for party in parties:
        total += voice(party, first, count)
    return np.clip(total, -32768, 32767).astype(np.int16)


def sample_at(t: float) -> int:
    """The absolute sample of Asterisk time `t` (epoch seconds)."""
    return round(t * SAMPLE_RATE)


# --- who hears whom ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelState:
    """One channel at one moment, as far as audio goes."""

    bridge: str  # "" = not in a bridge
    moh: bool = False


@dataclass(frozen=True)
class Span:
    """From `start` to `end` (Asterisk time) the recorded channel was in this state."""

    start: float
    end: float
    bridged: bool
    reads: tuple[str, ...]  # whose voices the channel reads (its own party, or passed on)
    hears: tuple[str, ...]  # whose voices are written to it


def heard_by(channel: str, states: Mapping[str, ChannelState], _seen: frozenset[str] = frozenset()
             ) -> tuple[str, ...]:
    """Parties whose voices are written to `channel` now."""
    state = states.get(channel)
    if state is None:
        return ()
    if state.moh:
        return (MOH,)
    if not state.bridge:
        return ()
    seen = _seen | {channel}
    out: list[str] = []
    for other, other_state in states.items():
        if other in seen or other_state.bridge != state.bridge:
            continue
        out.extend(read_by(other, states, seen))
    return tuple(sorted(set(out)))


def read_by(channel: str, states: Mapping[str, ChannelState], _seen: frozenset[str] = frozenset()
            ) -> tuple[str, ...]:
    """Parties whose voices a channel reads (sends into its bridge) now."""
    own = party_of(channel)
    if own is not None:
        return (own,)
    partner = local_partner(channel)
    if partner is None or partner in _seen:
        return ()
    return heard_by(partner, states, _seen | {channel})


History = Sequence[tuple[float, Mapping[str, "ChannelState"]]]


def spans(channel: str, history: History,
          start: float, end: float) -> list[Span]:
    """The recorded channel's states between `start` and `end`, from a history of (time, every
    channel's state from then on), sorted by time."""
    current: Mapping[str, ChannelState] = {}
    changes: list[tuple[float, Mapping[str, ChannelState]]] = []
    for at, states in history:
        if at <= start:
            current = states
        elif at < end:
            changes.append((at, states))
    out: list[Span] = []
    cursor = start
    for at, states in [*changes, (end, current)]:
        if at > cursor:
            state = current.get(channel)
            out.append(Span(cursor, at, bool(state and state.bridge),
                            read_by(channel, current), heard_by(channel, current)))
            cursor = at
        current = states  # from `at` on (the last pair only closes the final span)
    return out
