"""Hot standby: one active `serve` among several sharing one PostgreSQL."""
