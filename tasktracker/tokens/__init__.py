"""Personal access tokens (api-contract.md v1.1, "Personal access tokens"):
``tt_pat_`` bearer tokens with ``read`` / ``read``+``write`` scopes, stored only as a
SHA-256 hash. :mod:`.models` holds the row, :mod:`.services` the rules
(generate, create, authenticate, touch, scopes, list, delete)."""
