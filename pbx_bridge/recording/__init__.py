"""Call recordings wired into the bridge: the call hook, the background jobs, the HTTP routes."""
