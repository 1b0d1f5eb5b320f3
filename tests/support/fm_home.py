"""An FM home laid out the way the real Frappe Manager 0.20.0 reads it, and the real `fm` itself.

The suite runs the real ``frappe-manager==0.20.0`` (installed by ``make test`` into ``.venv-fm``) against
the ``docker`` double.  FM refuses to work on a home it did not write unless the files look like its
own, so this module writes what FM's own ``create`` writes (from FM 0.20.0's templates in
``frappe_manager/templates/``, rendered as FM renders them):

- ``fm_config.toml``: ``version`` and ``[migration_state] system_migrated_to`` = the FM version.
  Without the file FM thinks it is a first install and runs ``docker pull`` of its images; with an
  older ``system_migrated_to`` it prompts (an error under ``-n``).
- ``services/docker-compose.yml`` (``global-db`` = ``fm_global-db``, ``global-nginx-proxy``), its
  ``secrets/`` and the dirs FM creates.  Without it FM builds the services itself: that needs a
  ``docker`` group on the machine and ``docker create``/``cp`` of the mariadb image.
- per bench ``docker-compose.yml`` (FM's template: ``nginx`` needs its volumes, every service its
  ``container_name`` ``fm__<bench with . -> _>__<service>``), ``docker-compose.workers.yml`` and
  ``bench_config.toml`` with ``[migration_state] migrated_to``.  A ``migrated_to`` older than
  ``fm --version`` makes every bench command print "Bench migration required" and exit 0.

FM's docker-group check only runs when ``docker version --format json`` answers without a
``Server`` key (the daemon looks down): the double answers with one, so running as root without a
``docker`` group is fine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The version `make test` installs (Makefile: FM_VERSION); bench_config.toml and fm_config.toml carry it.
FM_VERSION = "0.20.0"
#: Set this to another `fm`/`fmx` executable to run the suite against it.
FM_ENV = "FMAPPLIANCE_TEST_FM"
FM_INSTALL_HINT = (
    f"The real Frappe Manager {FM_VERSION} is needed by this test and was not found at {{path}}. "
    "Install it with `make .venv-fm/.installed` (it needs Python 3.13, e.g. `pyenv install 3.13`), "
    f"or point {FM_ENV} at an fm executable."
)


def real_fm_path() -> Path:
    """Where the real `fm` is expected: $FMAPPLIANCE_TEST_FM, else <repo>/.venv-fm/bin/fm."""
    explicit = os.environ.get(FM_ENV)
    return Path(explicit) if explicit else REPO / ".venv-fm" / "bin" / "fm"


def real_fm() -> Path:
    """The real `fm` executable; a test that needs it fails (never skips) with how to install it."""
    path = real_fm_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise AssertionError(FM_INSTALL_HINT.format(path=path))
    return path


def container_prefix(bench: str) -> str:
    """FM's container name prefix: `fm__` + the bench name with dots as underscores."""
    return "fm__" + bench.replace(".", "_")


def write_fm_config(home: Path, version: str = FM_VERSION) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "fm_config.toml").write_text(
        f'version = "{version}"\n\n[validation]\nenforce_domain_uniqueness = true\n\n'
        f'[logs]\nfile_level = "DEBUG"\n\n[migration_state]\nsystem_migrated_to = "{version}"\n'
    )


def write_bench_config(bench_path: Path, bench: str, migrated_to: str = FM_VERSION) -> None:
    """bench_config.toml as FM 0.20.0 exports it (BenchConfig.export_to_toml)."""
    db_name = "_" + bench.replace(".", "_")
    (bench_path / "bench_config.toml").write_text(
        f'name = "{bench}"\ndeveloper_mode = false\nadmin_tools = false\nenvironment_type = "prod"\n'
        f'alias_domains = []\nupload_limit = "50M"\nuse_uv = true\ndb_name = "{db_name}"\n'
        'restart_policy = "unless-stopped"\nnewrelic_enabled = false\n\n'
        f'[migration_state]\nmigrated_to = "{migrated_to}"\nlast_migration_date = "2026-11-25T10:00:00"\n'
    )


def bench_migrated_to(bench_path: Path) -> str:
    for line in (bench_path / "bench_config.toml").read_text().splitlines():
        if line.startswith("migrated_to"):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def set_bench_migrated_to(bench_path: Path, version: str) -> None:
    """Rewrite `[migration_state] migrated_to` (an older one: the bench needs `fm migrate`)."""
    text = (bench_path / "bench_config.toml").read_text()
    lines = [f'migrated_to = "{version}"' if ln.startswith("migrated_to") else ln for ln in text.splitlines()]
    (bench_path / "bench_config.toml").write_text("\n".join(lines) + "\n")


#: What FM 0.20.0's `start` checks is present locally (`docker images`): every image of its templates
#: (frappe_manager.utils.site.get_all_docker_images).
FM_IMAGES = (
    f"ghcr.io/rtcamp/frappe-manager-frappe:v{FM_VERSION}",
    f"ghcr.io/rtcamp/frappe-manager-nginx:v{FM_VERSION}",
    "redis:8-alpine",
    "mariadb:10.6",
    "jwilder/nginx-proxy:1.11",
    "axllent/mailpit:v1.22",
    "adminer:4",
)
_FRAPPE_IMAGE = f"ghcr.io/rtcamp/frappe-manager-frappe:v{FM_VERSION}"
_NGINX_IMAGE = f"ghcr.io/rtcamp/frappe-manager-nginx:v{FM_VERSION}"


def _frappe_service(prefix: str, service: str, command: bool, uid: int, gid: int) -> str:
    return (
        f"  {service}:\n    image: {_FRAPPE_IMAGE}\n    container_name: {prefix}__{service}\n"
        + ("    command: launch_supervisor_service.sh\n" if command else "")
        + f"    environment:\n      USERID: {uid}\n      USERGROUP: {gid}\n      SERVICE_NAME: {service}\n"
        "    volumes:\n    - fm-sockets:/fm-sockets\n    - ./workspace:/workspace\n"
        "    networks:\n      site-network:\n      global-backend-network:\n"
    )


def bench_compose_yaml(bench: str) -> str:
    """FM 0.20.0's docker-compose.tmpl rendered for ``bench`` (what `fm create` writes)."""
    prefix, uid, gid = container_prefix(bench), os.getuid(), os.getgid()
    mappings = json.dumps({bench: bench})
    return (
        "services:\n"
        + _frappe_service(prefix, "frappe", False, uid, gid)
        + f"  nginx:\n    image: {_NGINX_IMAGE}\n    container_name: {prefix}__nginx\n    user: {uid}:{gid}\n"
        f"    environment:\n      SITE_MAPPINGS: '{mappings}'\n      VIRTUAL_HOST: {bench}\n      VIRTUAL_PORT: 80\n"
        "      HSTS: 'off'\n"
        "    volumes:\n    - ./workspace:/workspace\n    - ./configs/nginx/conf:/etc/nginx\n"
        "    - ./configs/nginx/logs:/var/log/nginx\n    - ./configs/nginx/cache:/var/cache/nginx\n"
        "    - ./configs/nginx/run:/var/run\n    - ./configs/nginx/html:/usr/share/nginx/html\n"
        "    networks:\n      site-network:\n      global-frontend-network:\n"
        + _frappe_service(prefix, "socketio", True, uid, gid)
        + _frappe_service(prefix, "schedule", True, uid, gid)
        + "".join(
            f"  {svc}:\n    image: redis:8-alpine\n    container_name: {prefix}__{svc}\n"
            f"    volumes:\n    - {svc}-data:/data\n    networks:\n      site-network:\n"
            for svc in ("redis-cache", "redis-queue")
        )
        + f"volumes:\n  fm-sockets:\n    name: {prefix}__fm-sockets\n"
        f"  redis-queue-data:\n    name: {prefix}__redis-queue-data\n"
        f"  redis-cache-data:\n    name: {prefix}__redis-cache-data\n"
        f"networks:\n  site-network:\n    name: {prefix}__site-network\n"
        "  global-frontend-network:\n    name: fm-global-frontend-network\n    external: true\n"
        "  global-backend-network:\n    name: fm-global-backend-network\n    external: true\n"
    )


def workers_compose_yaml(bench: str, workers: tuple[str, ...]) -> str:
    """FM 0.20.0's docker-compose.workers.tmpl, one service per worker."""
    prefix, uid, gid = container_prefix(bench), os.getuid(), os.getgid()
    return (
        "services:\n"
        + "".join(_frappe_service(prefix, w, True, uid, gid) for w in workers)
        + f"volumes:\n  fm-sockets:\n    name: {prefix}__fm-sockets\n    external: true\n"
        f"networks:\n  site-network:\n    name: {prefix}__site-network\n    external: true\n"
        "  global-backend-network:\n    name: fm-global-backend-network\n    external: true\n"
    )


def services_compose_yaml(services_dir: Path) -> str:
    """FM 0.20.0's docker-compose.services.tmpl as ServicesManager.create renders it."""
    uid, gid = os.getuid(), os.getgid()
    proxy_volumes = ("certs", "dhparam", "confd", "htpasswd", "vhostd", "logs", "run", "ssl", "cache")
    targets = {
        "certs": "/etc/nginx/certs",
        "dhparam": "/etc/nginx/dhparam",
        "confd": "/etc/nginx/conf.d",
        "htpasswd": "/etc/nginx/htpasswd",
        "vhostd": "/etc/nginx/vhost.d",
        "logs": "/var/log/nginx",
        "run": "/var/run",
        "ssl": "/usr/share/nginx/ssl",
        "cache": "/var/cache/nginx",
    }
    return (
        "services:\n"
        f"  global-db:\n    container_name: fm_global-db\n    image: mariadb:10.6\n    user: {uid}:{gid}\n"
        "    restart: always\n    command:\n    - --character-set-server=utf8mb4\n"
        "    - --collation-server=utf8mb4_unicode_ci\n    - --skip-character-set-client-handshake\n"
        "    - --skip-innodb-read-only-compressed\n"
        "    environment:\n      MYSQL_ROOT_PASSWORD_FILE: /run/secrets/db_root_password\n"
        "      MYSQL_DATABASE: root\n      MYSQL_USER: admin\n      MYSQL_PASSWORD_FILE: /run/secrets/db_password\n"
        "    volumes:\n    - ./mariadb/data:/var/lib/mysql\n    - ./mariadb/conf:/etc/mysql\n"
        "    - ./mariadb/logs:/var/log/mysql\n    networks:\n    - global-backend-network\n"
        "    secrets:\n    - db_password\n    - db_root_password\n"
        f"  global-nginx-proxy:\n    container_name: fm_global-nginx-proxy\n    user: {uid}:{gid}\n"
        "    image: jwilder/nginx-proxy:1.11\n    environment:\n      ACME_HTTP_CHALLENGE_LOCATION: false\n"
        "    ports:\n    - 80:80\n    - 443:443\n    restart: always\n    volumes:\n"
        + "".join(f"    - ./nginx-proxy/{v}:{targets[v]}\n" for v in proxy_volumes)
        + "    - /var/run/docker.sock:/tmp/docker.sock:ro\n    networks:\n    - global-frontend-network\n"
        "networks:\n  global-frontend-network:\n    name: fm-global-frontend-network\n"
        "    ipam:\n      config:\n      - subnet: 10.1.0.0/16\n"
        "  global-backend-network:\n    name: fm-global-backend-network\n"
        "    ipam:\n      config:\n      - subnet: 10.2.0.0/16\n"
        f"secrets:\n  db_password:\n    file: {services_dir / 'secrets' / 'db_password.txt'}\n"
        f"  db_root_password:\n    file: {services_dir / 'secrets' / 'db_root_password.txt'}\n"
    )


def write_services(home: Path, root_password: str) -> None:
    """FM's global services dir (what ServicesManager.create leaves, minus the mariadb config copy)."""
    services = home / "services"
    for sub in ("mariadb/conf", "mariadb/logs", "mariadb/data", "secrets") + tuple(
        f"nginx-proxy/{d}"
        for d in ("dhparam", "certs", "confd", "htpasswd", "vhostd", "html", "logs", "run", "ssl", "cache")
    ):
        (services / sub).mkdir(parents=True, exist_ok=True)
    (services / "docker-compose.yml").write_text(services_compose_yaml(services))
    (services / "secrets" / "db_root_password.txt").write_text(root_password)
    (services / "secrets" / "db_password.txt").write_text("fmAdmin!@%_-+?3x")
