"""CRM connectors (Bitrix24, Kommo): the live card, the call log push, click-to-call from the CRM."""
