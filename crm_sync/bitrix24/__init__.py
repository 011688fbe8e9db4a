"""Bitrix24 "external telephony": the call stays on Asterisk, Bitrix24 shows the call card,
records the call activity, creates a lead for an unknown number and keeps the recording.

- api.py: the REST client (webhook or application OAuth, `batch`, limits, token refresh)
- commands.py: the methods' parameters built from our calls (what each field means)
- directory.py: Bitrix24 users by extension (`user.get`'s UF_PHONE_INNER)
- sender.py: outbox items to requests, many per `batch`
"""
