"""Read-only exports of a user's tasks: the RFC 5545 calendar feed
(:mod:`.calendar`, :mod:`.models`) and the CSV export (:mod:`.csv_export`)
(api-contract.md v1.1, "Calendar feed", "CSV export")."""
