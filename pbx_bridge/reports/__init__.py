"""Reports over the call log."""
