"""API tokens: creation, lookup by hash, the middleware that turns a bearer token into a Principal."""
