"""Transcription of call recordings with vosk: a durable job queue, a worker pool, the dialog with
its speakers, speech analytics and full-text search. A library: never imports pbx_bridge."""
