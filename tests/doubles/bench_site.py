"""`bench --site S ...` commands of the doubles that touch a site's database and config.

backup (real files from the database's text, gpg-encrypted `-enc` parts when the site's System
Settings say so), restore (drops and refills the database from the dump, unpacks file tars with
`--strip 2`), new-site, list-apps, migrate, set-maintenance-mode, scheduler, set-config.
Behaviour follows docs/doubles.md ("bench", "Restores"): the site must exist, root credentials come
from the flags or site/common config (a prompt fails without a terminal), a failed import leaves a
partial database, the site's config is kept.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from db_server import BAD_SQL, DbServer, apps_in, site_content, user_count

ENCRYPT_MARK = "INSERT INTO `tabSingles` VALUES ('System Settings','encrypt_backup','1');"
_CHUNK = 1 << 20


class Bench:
    """One bench as its container sees it: host root, container root, fault scope, database server."""

    def __init__(self, world, root: Path, container_root: str, project: str | None, db: DbServer, client=None):
        self.world = world
        self.client = client  # the container's address: where the database sees bench connect from
        self.root = Path(root)
        self.container_root = container_root
        self.project = project
        self.db = db

    def site_dir(self, site: str) -> Path:
        return self.root / "sites" / site

    def exists(self, site: str) -> bool:
        return (self.site_dir(site) / "site_config.json").is_file()

    def config(self, site: str) -> dict:
        return json.loads((self.site_dir(site) / "site_config.json").read_text())

    def save_config(self, site: str, config: dict) -> None:
        path = self.site_dir(site) / "site_config.json"
        tmp = path.with_name(f".site_config.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(config, indent=1))
        os.replace(tmp, path)

    def common_config(self) -> dict:
        try:
            return json.loads((self.root / "sites" / "common_site_config.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def bench_apps(self) -> list[str] | None:
        try:
            return [a.strip() for a in (self.root / "sites" / "apps.txt").read_text().splitlines() if a.strip()]
        except FileNotFoundError:
            return None

    def db_name(self, site: str) -> str:
        return self.config(site)["db_name"]

    def content(self, site: str) -> str | None:
        """The site's database text; a site made before the database carried content gets the default."""
        db = self.db_name(site)
        text = self.db.content(db)
        if text is None:
            text = site_content(site)
            self.db.set_content(db, text)
        return text

    def head(self, site: str) -> str:
        """The start of the site's database text, where frappe's own tables are (mysqldump writes in name
        order, and a real migrate or list-apps does not read every row either)."""
        db = self.db_name(site)
        try:
            with open(self.db.db_path(db), encoding="utf-8", errors="replace") as fh:
                return fh.read(4 << 20)
        except FileNotFoundError:
            return self.content(site) or ""

    def host_path(self, path: str) -> Path | None:
        if path.startswith(self.container_root + "/"):
            return self.root / path[len(self.container_root) + 1 :]
        return None

    def fault(self, key: str):
        from double_state import apply_faults

        return apply_faults(self.world, key, self.project)


def _options(args: list[str], flags=()) -> tuple[list[str], dict]:
    """Positional words and --option values (``--a=b`` or ``--a b``); ``flags`` take no value."""
    words, opts, i = [], {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                key, value = a[2:].split("=", 1)
                opts[key] = value
            elif a[2:] in flags:
                opts[a[2:]] = True
            else:
                opts[a[2:]], i = (args[i + 1] if i + 1 < len(args) else ""), i + 1
        else:
            words.append(a)
        i += 1
    return words, opts


def _gpg_home(world) -> Path:
    """The world's gpg home. gpg-agent's sockets live in it, and a Unix socket path has at most 107
    bytes: a deep tmp dir (pytest-xdist adds ``popen-gwN/``) gets a short home under /tmp instead,
    one per world (symmetric encryption keeps nothing in it worth sharing)."""
    home = Path(world.dir) / "gnupg"
    if len(str(home / "S.gpg-agent.browser")) > 100:
        home = Path(tempfile.gettempdir()) / f"fmdouble-gnupg-{hashlib.sha256(str(home).encode()).hexdigest()[:16]}"
    home.mkdir(mode=0o700, exist_ok=True)
    return home


def _gpg(world, args: list[str], passphrase: str) -> subprocess.CompletedProcess:
    home = _gpg_home(world)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, passphrase.encode() + b"\n")
    os.close(write_fd)
    try:
        return subprocess.run(
            [
                "gpg",
                "--homedir",
                str(home),
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                str(read_fd),
                *args,
            ],
            pass_fds=(read_fd,),
            capture_output=True,
        )
    finally:
        os.close(read_fd)


# ---------------------------------------------------------------------------------------------- backup


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}B"


def _write_tar(path: Path, site: str, kind: str) -> None:
    import io
    import time

    with tarfile.open(path, "w") as tar:
        for name, text in ((f"hello-{kind}.txt", f"{kind} file of {site}\n"), ("logo.png", "PNG" * 100)):
            data = text.encode()
            info = tarfile.TarInfo(f"./{site}/{kind}/files/{name}")
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))


def backup(bench: Bench, site: str, with_files: bool) -> int:
    """`bench --site S backup [--with-files]`: real files named as bench names them, the real summary."""
    faults = bench.world.faults()
    if not bench.exists(site):
        print(f"Site {site} does not exist", flush=True)
        return 1
    code = bench.fault("bench backup")
    if code is not None:
        print(f"Backup failed for Site {site}. Database or site_config.json may be corrupted")
        return code
    content = bench.content(site) or ""
    config = bench.config(site)
    encrypt = ENCRYPT_MARK in content and config.get("backup_encryption_key")
    enc = "-enc" if encrypt else ""
    now = datetime.datetime.now()
    ts, slug = now.strftime("%Y%m%d_%H%M%S"), site.replace(".", "_")
    backups = bench.site_dir(site) / "private" / "backups"
    backups.mkdir(parents=True, exist_ok=True)
    config_file = backups / f"{ts}-{slug}-site_config_backup{enc}.json"
    config_file.write_text(json.dumps(config, indent=1))
    db = backups / f"{ts}-{slug}-database{enc}.sql.gz"
    apps = apps_in(content) or []
    body = "".join(line for line in content.splitlines(keepends=True) if not line.startswith("-- Dump completed"))
    mode = faults.get("dump", "ok")
    with gzip.open(db, "wt", compresslevel=1) as fh:
        fh.write(f"-- begin frappe metadata\n-- site: {site}\n-- apps: {' '.join(apps)}\n-- end frappe metadata\n")
        fh.write(body)
        if mode != "no_trailer":
            fh.write(f"-- Dump completed on {now:%Y-%m-%d %H:%M:%S}\n")
    if mode == "truncated":
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2])
    parts = [("Config  ", config_file), ("Database", db)]
    if with_files:
        public = backups / f"{ts}-{slug}-files{enc}.tar"
        private = backups / f"{ts}-{slug}-private-files{enc}.tar"
        _write_tar(public, site, "public")
        _write_tar(private, site, "private")
        parts += [("Public  ", public), ("Private ", private)]
    if encrypt:
        for _label, path in parts[1:]:  # bench leaves the site config backup readable: it holds the key
            res = _gpg(bench.world, ["--symmetric", "--output", str(path) + ".gpg", str(path)], encrypt)
            if res.returncode:
                print(res.stderr.decode(), file=sys.stderr)
                return 1
            os.replace(str(path) + ".gpg", path)
    if faults.get("no_summary"):
        print("Backup done.")
        return 0
    print(f"Backup Summary for {site} at {now:%Y-%m-%d %H:%M:%S.%f}")
    for label, path in parts:
        print(
            f"{label}: {bench.container_root}/sites/{site}/private/backups/{path.name} {_human_size(path.stat().st_size)}"
        )
    print(f"Backup for Site {site} has been successfully completed" + (" with files" if with_files else ""))
    return 0


# --------------------------------------------------------------------------------------------- restore


def _conf(bench: Bench, site: str) -> dict:
    """frappe.conf: common_site_config.json overlaid with the site's site_config.json (when the site exists)."""
    return {**bench.common_config(), **(bench.config(site) if bench.exists(site) else {})}


def _root_credentials(bench: Bench, site: str, opts: dict) -> tuple[str, str | None]:
    """frappe v15 get_root_connection (database/mariadb/setup_db.py): the flags, else the conf's
    `mariadb_root_login`/`root_login` (then a prompt on a TTY, else "root") and
    `mariadb_root_password`/`root_password` (then getpass, which fails without a terminal)."""
    conf = _conf(bench, site)
    user = (
        opts.get("db-root-username")
        or opts.get("mariadb-root-username")
        or conf.get("mariadb_root_login")
        or conf.get("root_login")
        or "root"
    )
    password = opts.get("db-root-password") or opts.get("mariadb-root-password")
    if not password:
        password = conf.get("mariadb_root_password") or conf.get("root_password")
    if password:
        bench.world.note_secret("bench root password", password)
    return user, password


def _decrypted(bench: Bench, path: Path, key: str | None, tmp: str) -> Path | None:
    """The plaintext of an `-enc` part (gpg symmetric); None when the key does not open it."""
    if not key:
        return None
    out = Path(tmp) / (path.name + ".plain")
    res = _gpg(bench.world, ["--decrypt", "--output", str(out), str(path)], key)
    return out if res.returncode == 0 else None


def restore(bench: Bench, site: str, args: list[str], force: bool) -> int:
    words, opts = _options(args)
    if not words:
        print("Error: Missing argument 'SQL_FILE_PATH'.")
        return 2
    if not bench.exists(site):
        print(f"Site {site} does not exist")
        return 1
    dump = bench.host_path(words[0])
    if dump is None or not dump.is_file():
        print(f"Invalid path {words[0]}")
        return 1
    user, password = _root_credentials(bench, site, opts)
    if not password:
        print("MySQL root password: ")
        print("Aborted!")
        return 1
    if not bench.db.is_up():
        print(f'pymysql.err.OperationalError: (2003, "{bench.db.cannot_connect()}")')
        return 1
    if not bench.db.authenticate(user, password, bench.client):
        print(f'pymysql.err.OperationalError: (1045, "{bench.db.denied(user, password)}")')
        return 1
    db_name = bench.db_name(site)
    if not bench.db.may_manage(user, db_name, bench.client):
        print(f"pymysql.err.OperationalError: (1044, \"Access denied for user '{user}'@'%' to database '{db_name}'\")")
        return 1
    key = opts.get("encryption-key") or bench.config(site).get("backup_encryption_key")
    if key and "-enc" in dump.name:
        bench.world.note_secret("backup encryption key", key)
    with tempfile.TemporaryDirectory(dir=bench.db.dir.parent) as tmp:
        if "-enc" in dump.name:
            dump = _decrypted(bench, dump, key, tmp)
            if dump is None:
                print("Encryption key is invalid: the backup could not be decrypted")
                return 1
        if not force:
            with gzip.open(dump, "rt", errors="replace") as fh:
                if not any("__Auth" in line for line in fh):
                    print("Error: the backup does not contain the __Auth table; refusing it (use --force)")
                    return 1
        # Like frappe: DROP DATABASE, CREATE, GRANT, then gzip -cd | mariadb.
        target = bench.db.db_path(db_name)
        target.parent.mkdir(parents=True, exist_ok=True)
        code = bench.fault("bench restore")
        with gzip.open(dump, "rb") as src, open(target, "wb") as dst:
            if code is not None:
                dst.write(src.read(40))  # a failed import leaves a partial database
                print("ERROR 1064 (42000) at line 3: You have an error in your SQL syntax")
                return code
            try:
                for number, line in enumerate(src, 1):
                    if line.startswith(BAD_SQL.encode()):
                        # mariadb stops at the first bad statement: the database keeps what came before
                        print(f"ERROR 1064 (42000) at line {number}: You have an error in your SQL syntax")
                        return 1
                    dst.write(line)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                print(f"gzip: {dump.name}: {exc}")
                return 1
        if not _has_default_value(target):
            print("Table tabDefaultValue does not exist after the restore: the backup is incomplete")
            return 1
        with_files = False
        for option in ("with-public-files", "with-private-files"):
            if option not in opts:
                continue
            tar_path = bench.host_path(opts[option])
            if tar_path is None or not tar_path.is_file():
                print(f"Invalid path {opts[option]}")
                return 1
            if "-enc" in tar_path.name:
                tar_path = _decrypted(bench, tar_path, key, tmp)
                if tar_path is None:
                    print("Encryption key is invalid: the files could not be decrypted")
                    return 1
            _extract_strip2(tar_path, bench.site_dir(site))
            with_files = True
    print(f"Site {site} has been restored" + (" with files" if with_files else ""))
    return 0


def _has_default_value(path: Path) -> bool:
    """frappe checks that tabDefaultValue exists after an import (its CREATE is near the start)."""
    with open(path, "rb") as fh:
        return b"`tabDefaultValue`" in fh.read(1 << 20)


def _extract_strip2(tar_path: Path, site_dir: Path) -> None:
    """`tar xf --strip 2` run in the site dir: ./S/public/files/x lands in public/files/x."""
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = Path(member.name).parts
            parts = parts[1:] if parts and parts[0] == "." else parts
            rest = parts[1:]
            if not rest or ".." in rest:
                continue
            dest = site_dir.joinpath(*rest)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                dest.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)


# ------------------------------------------------------------------------------------------ new-site


def new_site(bench: Bench, args: list[str]) -> int:
    words, opts = _options(args)
    if not words:
        print("Error: Missing argument 'SITE'.")
        return 2
    site = words[0]
    if bench.exists(site):
        print(f"Site {site} already exists")
        return 1
    user, password = _root_credentials(bench, site, opts)
    if not password:
        print("MySQL root password: ")
        print("Aborted!")
        return 1
    if not bench.db.is_up():
        print(f'pymysql.err.OperationalError: (2003, "{bench.db.cannot_connect()}")')
        return 1
    db_name = opts.get("db-name") or "_" + secrets.token_hex(8)
    if not bench.db.authenticate(user, password, bench.client) or not bench.db.may_manage(user, db_name, bench.client):
        print(f'pymysql.err.OperationalError: (1045, "{bench.db.denied(user, password)}")')
        return 1
    # frappe's get_admin_password: --admin-password, else the conf's admin_password, else getpass (no terminal: fails)
    admin = opts.get("admin-password") or _conf(bench, site).get("admin_password")
    if not admin:
        print("Set Administrator password: ")
        print("Aborted!")
        return 1
    bench.world.note_secret("admin password", admin)
    code = bench.fault("bench new-site")
    if code is not None:
        return code
    site_dir = bench.site_dir(site)
    for sub in ("private/backups", "private/files", "public/files"):
        (site_dir / sub).mkdir(parents=True, exist_ok=True)
    bench.save_config(site, {"db_name": db_name, "db_password": secrets.token_hex(8), "db_type": "mariadb"})
    bench.db.set_content(db_name, site_content(site, apps=("frappe",), notes=0, tag="new-site"))
    print(
        f"Installing frappe...\nUpdating DocTypes for frappe        : [====] 100%\n*** Scheduler is disabled ***\n"
        f"Current Site set to {site}"
    )
    return 0


# ------------------------------------------------------------------------------------- small commands


def list_apps(bench: Bench, site: str, args: list[str]) -> int:
    if not bench.exists(site):
        print(f"Site {site} does not exist")
        return 1
    code = bench.fault("bench list-apps")
    if code is not None:
        return code
    if not bench.db.is_up():
        print(f'pymysql.err.OperationalError: (2003, "{bench.db.cannot_connect()}")')
        return 1
    apps = apps_in(bench.head(site))
    if apps is None:
        print(
            f"pymysql.err.ProgrammingError: (1146, \"Table '{bench.db_name(site)}.tabInstalled Application' doesn't exist\")"
        )
        return 1
    _words, opts = _options(args)
    if opts.get("format") == "json":
        print(json.dumps({site: apps}))
    else:
        print("\n".join(apps))
    return 0


def migrate(bench: Bench, site: str) -> int:
    if not bench.exists(site):
        print(f"Site {site} does not exist")
        return 1
    code = bench.fault("bench migrate")
    if code is not None:
        return code
    if bench.db.root_password() is not None:
        # Only worlds that model the database check it (older tests migrate sites without one).
        if not bench.db.is_up():
            print(f'pymysql.err.OperationalError: (2003, "{bench.db.cannot_connect()}")')
            return 1
        apps = apps_in(bench.head(site))
        if apps is None:
            print(
                f"pymysql.err.ProgrammingError: (1146, \"Table '{bench.db_name(site)}.tabDefaultValue' doesn't exist\")"
            )
            return 1
        missing = [a for a in apps if a not in (bench.bench_apps() or apps)]
        if missing:
            print(f"ModuleNotFoundError: No module named '{missing[0]}'")
            return 1
    print(f"Migrating {site}")
    print("Updating DocTypes for frappe        : [========================================] 100%")
    print("Updating DocTypes for erpnext       : [========================================] 100%")
    print("Executing `after_migrate` hooks...")
    print("Queued rebuilding of search index for " + site)
    return 0


def set_maintenance_mode(bench: Bench, site: str, args: list[str]) -> int:
    if not bench.exists(site) or not args or args[0] not in ("on", "off"):
        print(f"Site {site} does not exist" if not bench.exists(site) else "Usage: set-maintenance-mode on|off")
        return 1
    code = bench.fault("bench set-maintenance-mode")
    if code is not None:
        return code
    config = bench.config(site)
    config["maintenance_mode"] = 1 if args[0] == "on" else 0
    bench.save_config(site, config)
    return 0


def scheduler(bench: Bench, site: str, args: list[str]) -> int:
    if not bench.exists(site) or not args:
        print(f"Site {site} does not exist" if not bench.exists(site) else "Usage: scheduler pause|resume|status")
        return 1
    config = bench.config(site)
    if args[0] == "status":
        state = "paused" if config.get("pause_scheduler") else "enabled"
        print(f"Scheduler is {state} for site {site}")
        return 0
    if args[0] not in ("pause", "resume"):
        print(f"Error: No such command '{args[0]}'.")
        return 2
    config["pause_scheduler"] = 1 if args[0] == "pause" else 0
    bench.save_config(site, config)
    return 0


def set_config(bench: Bench, site: str, args: list[str]) -> int:
    words, _opts = _options(args, flags=("parse", "global", "g"))
    if not bench.exists(site) or len(words) != 2:
        print(f"Site {site} does not exist" if not bench.exists(site) else "Usage: set-config KEY VALUE")
        return 1
    config = bench.config(site)
    config[words[0]] = words[1]
    bench.save_config(site, config)
    return 0


def drop_site(bench: Bench, args: list[str]) -> int:
    """`bench drop-site SITE [--no-backup] [--force] --db-root-username U --db-root-password P
    [--archived-sites-path P]`: drops the database and moves the site dir, as frappe v14+ does, to
    `<bench>/archived/sites/<SITE>` or to `<P>/<SITE>` (realpath of P, created when missing; `<SITE>1`,
    `<SITE>2`... when that name is taken)."""
    words, opts = _options(args, flags=("no-backup", "force"))
    if not words:
        print("Error: Missing argument 'SITE'.")
        return 2
    site = words[0]
    if not bench.exists(site):
        print(f"Site {site} does not exist")
        return 1
    code = bench.fault("bench drop-site")
    if code is not None:
        return code
    user, password = _root_credentials(bench, site, opts)
    if not password:
        print("MySQL root password: ")
        print("Aborted!")
        return 1
    db_name = bench.db_name(site)
    if not bench.db.authenticate(user, password, bench.client) or not bench.db.may_manage(user, db_name, bench.client):
        print(f'pymysql.err.OperationalError: (1045, "{bench.db.denied(user, password)}")')
        return 1
    print("Dropping site database and user")
    bench.db.drop(db_name)
    given = opts.get("archived-sites-path")
    if given:
        # frappe runs in sites/: a relative path is taken from there.
        archived = bench.host_path(os.path.normpath(given)) if given.startswith("/") else bench.root / "sites" / given
        if archived is None:
            # The double only models paths inside the bench.
            print(f"PermissionError: [Errno 13] Permission denied: '{given}'")
            return 1
    else:
        archived = bench.root / "archived" / "sites"
    print(f"Moving site to archive under {given or bench.container_root + '/archived/sites'}")
    archived.mkdir(parents=True, exist_ok=True)
    count, target = 0, archived / site
    while target.exists():
        count += 1
        target = archived / f"{site}{count}"
    shutil.move(str(bench.site_dir(site)), str(target))
    return 0


def _frappe_eval(text: str):
    """What frappe's `execute` makes of --args/--kwargs: `eval(text)`.  The double evaluates literals
    only; a name eval would not know (NameError) is what frappe turns into the string itself, and
    anything else it cannot evaluate is a SyntaxError as in python."""
    import ast

    tree = ast.parse(text.strip(), mode="eval")
    if any(isinstance(node, ast.Name) for node in ast.walk(tree)):
        raise NameError(text)
    return ast.literal_eval(tree)


def execute(bench: Bench, site: str, args: list[str]) -> int:
    """`bench --site S execute METHOD [--args A] [--kwargs K]` as frappe runs it: `args = eval(A)`
    (on NameError `[A]`), `kwargs = eval(K)`; the result is printed as JSON when truthy.  The one
    method modelled is frappe.db.count(doctype, filters=None)."""
    words, opts = _options(args)
    if not bench.exists(site):
        print(f"Site {site} does not exist")
        return 1
    try:
        try:
            call_args = _frappe_eval(opts["args"]) if opts.get("args") else ()
        except NameError:
            call_args = [opts["args"]]
        call_kwargs = _frappe_eval(opts["kwargs"]) if opts.get("kwargs") else {}
    except (SyntaxError, ValueError) as exc:
        print(f"SyntaxError: {exc}")
        return 1
    if isinstance(call_args, (str, bytes)) or not isinstance(call_args, (list, tuple)):
        # `*args` of a string spreads its characters, of anything else fails; neither is modelled.
        print(f"Error: the double does not model frappe.get_attr({words[0]!r})(*{call_args!r})")
        return 2
    if words != ["frappe.db.count"]:
        print(f"Error: the doubles only execute frappe.db.count, not {words}")
        return 2
    doctype = call_args[0] if call_args else call_kwargs.get("dt")
    if not bench.db.is_up():
        print(f'pymysql.err.OperationalError: (2003, "{bench.db.cannot_connect()}")')
        return 1
    count = user_count(bench.content(site) or "") if doctype == "User" else None
    if count is None:
        print(f"pymysql.err.ProgrammingError: (1146, \"Table '{bench.db_name(site)}.tab{doctype}' doesn't exist\")")
        return 1
    if count:
        print(json.dumps(count))
    return 0
