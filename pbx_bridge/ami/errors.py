"""Errors of talking to a PBX, shared by every feature that sends AMI actions."""


class PbxUnavailable(Exception):
    """Not connected (or not logged in) to that PBX right now; try again later."""


class ActionFailed(Exception):
    """Asterisk answered `Response: Error`; the message is Asterisk's."""


class ActionTimeout(PbxUnavailable):
    """No answer to an action in time; the connection is considered unhealthy."""
