"""Labels of tasks (api-contract.md v1.1, "Labels")."""
