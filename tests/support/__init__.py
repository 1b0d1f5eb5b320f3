"""Shared test support: config files, free ports, process helpers."""
