"""Client cards and phone-number matching. A library: never imports pbx_bridge."""
