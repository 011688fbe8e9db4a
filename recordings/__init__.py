"""Call recordings and their transcription. A library: never imports pbx_bridge."""
