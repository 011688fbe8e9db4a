"""TLS for AMI: the client side of `[[pbx]] tls` (Asterisk's manager.conf `tlsenable`).

The context is built once per connection from the PBX's settings: the system's trusted CAs or
`tls_ca_file`, host name checked; `tls_verify = false` turns both checks off (a lab only: the
password then goes to whoever answers)."""

from __future__ import annotations

import ssl

from pbx_bridge.config import PbxConfig


class TlsSetupError(Exception):
    """The CA file cannot be read or is not PEM certificates."""


def client_context(config: PbxConfig) -> ssl.SSLContext | None:
    """None for a plaintext AMI connection."""
    if not config.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"tls_ca_file {config.tls_ca_file!r}: {exc}") from None
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe_failure(exc: ssl.SSLError) -> str:
    """One line an administrator can act on (the verification reason when there is one)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message or exc.reason}"
    reason = exc.reason or str(exc)
    if reason == "WRONG_VERSION_NUMBER":
        return "no TLS on that port (is it the plaintext AMI port 5038?)"
    return f"TLS handshake failed: {reason}"
