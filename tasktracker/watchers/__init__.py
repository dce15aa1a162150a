"""Watchers of tasks and mentions in comments (api-contract.md v1.1, "Watchers and mentions")."""
