"""Transcription wired into the bridge: job enqueueing, in-process workers, events, HTTP, tags."""
