"""Kommo (amoCRM) API v4: every ended call as a call event on the client's card, calls from
unknown numbers as incoming (unsorted) leads, contacts looked up by phone for the screen pop.

- api.py: the HTTP client (OAuth 2 with refresh tokens, or a long-lived token; 7 requests/s)
- items.py: the outbox items
- sender.py: items to requests
"""
