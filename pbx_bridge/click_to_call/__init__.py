"""Click-to-call: originate a call operator-first and follow it to the end."""
