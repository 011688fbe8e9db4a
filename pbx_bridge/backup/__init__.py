"""Backups of a running bridge and their restore: the database (SQLite's online backup API, or
pg_dump from one exported snapshot), the recordings and the transcripts, every file listed with
its SHA-256 in a manifest that the restore checks."""
