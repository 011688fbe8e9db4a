"""Live events: call and feature notifications on the bus, to WebSocket and SSE clients."""
