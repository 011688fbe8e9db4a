"""pbx-bridge: Asterisk AMI to CRM bridge."""

__version__ = "0.1.0"
