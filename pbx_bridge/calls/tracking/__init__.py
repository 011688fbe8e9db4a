"""The parts of the call tracker (pbx_bridge.calls.tracker.CallTracker), one concern a module.
Each event handler is a plain function over the one shared `TrackerState`:

- state: the settings, the call/channel/leg objects, the shared maps.
- rules: the status and direction rules; the CallRecord built from a call.
- reporting: the changes reported (`started`, `updated`, `ended` once), ending a call.
- answering: operators rung, the call's answer.
- originates: OriginateResponse and the wait for it.
- channels: channels and Local pairs, channel variables, calls merging, Hangup.
- transfers: every transfer: blind, attended (Atxfer's Local pair), a Redirect, a pickup.
- dials: Dials and queues.
- bridges: bridges and the answer they imply.
- cel: CEL's LINKEDID_END; absorbing the calls rebuilt from CEL.
- resync: the CoreShowChannels snapshot after a (re)login; restoring after a restart.

Lower modules never import higher ones (the order above, reporting before the event handlers).
"""
