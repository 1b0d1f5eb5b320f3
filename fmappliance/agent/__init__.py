"""The privileged agent: a JSON API that runs an allow-list of fm / docker compose / bench operations as jobs."""
