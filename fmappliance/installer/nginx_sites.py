"""Whether this nginx serves anything besides the dashboard.

In ``accel`` download mode nginx's user may read every backup (site_config.json secrets
included), and so may every other site and PHP-FPM pool running as that user.  The installer
defaults to ``accel`` only when nginx serves nothing else.
"""

from __future__ import annotations

import os
import re

OUR_SITE = "fm-dashboard.conf"
#: Debian's stock site: the installer disables it (it is also a default server on port 80).
STOCK_SITE = "default"
_SERVER_BLOCK = re.compile(r"^\s*server\s*\{", re.M)


def other_sites(nginx_dir: str) -> list[str]:
    """Config files under nginx_dir that define servers other than ours (stock ``default`` excluded)."""
    found = []
    enabled = os.path.join(nginx_dir, "sites-enabled")
    for name in sorted(os.listdir(enabled)) if os.path.isdir(enabled) else []:
        if name in (OUR_SITE, STOCK_SITE) or name.startswith("."):
            continue
        found.append(os.path.join(enabled, name))
    conf_d = os.path.join(nginx_dir, "conf.d")
    for name in sorted(os.listdir(conf_d)) if os.path.isdir(conf_d) else []:
        path = os.path.join(conf_d, name)
        if name.endswith(".conf") and _defines_a_server(path):
            found.append(path)
    main = os.path.join(nginx_dir, "nginx.conf")
    if _defines_a_server(main):
        found.append(main)
    return found


def _defines_a_server(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = "\n".join(line.split("#", 1)[0] for line in fh)
    except OSError:
        return False
    return bool(_SERVER_BLOCK.search(text))
