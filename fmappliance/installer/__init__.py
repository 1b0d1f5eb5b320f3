"""What install.sh asks Python to do: discovery, config writing, reading config values.

Run as ``python3 fm-agent.pyz installer <command>`` (or ``python -m fmappliance.installer``);
the tests call the same functions directly.
"""
