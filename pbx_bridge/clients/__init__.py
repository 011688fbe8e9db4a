"""Client cards wired into the application: the call hook, the routing endpoint, the outbox worker."""
