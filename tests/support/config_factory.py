"""Write valid config.yaml files for tests.

``write_config(tmp_path, stacks={...}, agent={...}, ...)`` merges the given sections over
a minimal valid config whose state and backup dirs live under ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import bcrypt
import yaml

TEST_TOKEN = "test-token-0123456789abcdef0123456789abcdef"
TEST_SECRET_KEY = "test-secret-key-0123456789abcdef0123456789"
TEST_USER = "admin"
TEST_PASSWORD = "correct horse battery staple"
# Cost 4 keeps the suite fast; production hashes use 12.
TEST_PASSWORD_HASH = bcrypt.hashpw(TEST_PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def base_config(tmp_path: Path) -> dict:
    return {
        # port 0: a test that serves either picks no port that another may take meanwhile; the server
        # names its port in its "listening on" log line (support.world.ServedProcess reads it).
        "agent": {"listen": "127.0.0.1", "port": 0, "state_dir": str(tmp_path / "state" / "agent")},
        "security": {"token": TEST_TOKEN},
        "stacks": {},
        "backups": {"base_path": str(tmp_path / "backups")},
        "dashboard": {
            "listen": "127.0.0.1",
            "port": 0,
            "state_dir": str(tmp_path / "state" / "dashboard"),
            "secret_key": TEST_SECRET_KEY,
            "agent_url": "http://127.0.0.1:9100",
            "credentials": {TEST_USER: TEST_PASSWORD_HASH},
            # Most tests sign in with the password alone; tests of the second factor turn it on.
            "totp": "off",
        },
    }


def merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "stacks":
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def write_config(tmp_path: Path, name: str = "config.yaml", **sections) -> Path:
    """Write a config file under tmp_path and return its path."""
    data = merged(base_config(tmp_path), sections)
    path = Path(tmp_path) / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
