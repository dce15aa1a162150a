"""attachments domain."""
