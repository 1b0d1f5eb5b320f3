"""packaging/build.sh: reproducible zipapps that run with nothing but python3."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile

from install_harness import REPO, SYSTEM_PYTHON, build_dist, snapshot_sources

from fmappliance.version import __version__

ZIPAPPS = ("fm-agent.pyz", "fm-dashboard.pyz")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_zipapp(pyz, *args, home, shiv_root, stdin=None):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "SHIV_ROOT": str(shiv_root), "LANG": "C.UTF-8"}
    return subprocess.run(
        [SYSTEM_PYTHON, str(pyz), *args], env=env, capture_output=True, text=True, input=stdin, timeout=60
    )


def test_building_twice_from_different_paths_gives_byte_identical_zipapps(tmp_path):
    # A frozen copy, so that edits to the checkout during the test cannot tell the builds apart,
    # copied twice so that the checkout's path cannot leak into the bytes.
    first_src = snapshot_sources(tmp_path / "one" / "src")
    second_src = tmp_path / "two" / "elsewhere"
    shutil.copytree(first_src, second_src)
    epoch = subprocess.run(
        ["git", "log", "-1", "--format=%ct"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    first = build_dist(tmp_path / "one" / "dist", epoch=epoch, repo=first_src)
    second = build_dist(tmp_path / "two" / "dist", epoch=epoch, repo=second_src)
    for name in ZIPAPPS:
        assert sha256(first / name) == sha256(second / name), name
    assert (first / "SHA256SUMS").read_text() == (second / "SHA256SUMS").read_text()


def test_build_takes_its_timestamp_from_the_last_commit(dist):
    epoch = int(subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=REPO, capture_output=True, text=True).stdout)
    with zipfile.ZipFile(dist / "fm-agent.pyz") as archive:
        stamps = {info.date_time for info in archive.infolist()}
    assert len(stamps) == 1
    assert stamps.pop()[:3] == time.gmtime(epoch)[:3]


def test_sha256sums_covers_the_zipapps_and_their_platform_named_copies(dist):
    sums = dict(reversed(line.split()) for line in (dist / "SHA256SUMS").read_text().splitlines())
    for name in ZIPAPPS:
        assert sums[name] == sha256(dist / name)
        stem = name.removesuffix(".pyz")
        copies = [n for n in sums if n.startswith(f"{stem}-{__version__}-cp3") and n.endswith(".pyz")]
        assert len(copies) == 1, sums
        assert sums[copies[0]] == sums[name]
        assert os.uname().machine in copies[0]


def test_zipapps_carry_no_build_paths_or_console_scripts(dist):
    for name in ZIPAPPS:
        with zipfile.ZipFile(dist / name) as archive:
            names = archive.namelist()
            assert not [n for n in names if n.startswith("site-packages/bin/")]
            record = archive.read("site-packages/fmappliance-%s.dist-info/RECORD" % __version__).decode()
            assert "bin/" not in record
            for entry in names:
                if entry.endswith((".py", ".txt", ".json", "RECORD", "METADATA", "WHEEL")):
                    text = archive.read(entry).decode("utf-8", "replace")
                    for build_path in (str(REPO), sys.prefix, "/tmp/tmp."):
                        assert build_path not in text, (entry, build_path)


def test_each_zipapp_prints_its_version_with_plain_python3_and_extracts_into_shiv_root(dist, tmp_path):
    for name, prog in (("fm-agent.pyz", "fm-agent"), ("fm-dashboard.pyz", "fm-dashboard")):
        shiv_root = tmp_path / f"cache-{prog}"
        proc = run_zipapp(dist / name, "--version", home=tmp_path / "home", shiv_root=shiv_root)
        assert proc.returncode == 0, proc.stderr
        assert __version__ in proc.stdout
        assert any(p.name.startswith(f"{name}_") for p in shiv_root.iterdir())
    assert not (tmp_path / "home" / ".shiv").exists(), "zipapps must extract into SHIV_ROOT, not ~/.shiv"


def test_templates_and_static_files_load_from_inside_the_zipapp(dist, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from importlib.resources import files\n"
        "import fmappliance\n"
        "assets = files('fmappliance.assets')\n"
        "assert (assets / 'static' / 'htmx.min.js').read_bytes().startswith(b'var htmx')\n"
        "templates = sorted(p.name for p in (assets / 'templates').iterdir() if p.name.endswith('.tpl'))\n"
        "assert 'login.tpl' in templates and 'layout.tpl' in templates, templates\n"
        "print(fmappliance.__file__)\n"
    )
    shiv_root = tmp_path / "cache"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHIV_ROOT": str(shiv_root), "SHIV_INTERPRETER": "1"}
    proc = subprocess.run(
        [SYSTEM_PYTHON, str(dist / "fm-dashboard.pyz"), str(probe)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(shiv_root)), "the package must come from the zipapp, not the checkout"


def test_hash_password_from_the_zipapp_reads_stdin_and_prints_a_bcrypt_hash(dist, tmp_path):
    import bcrypt

    proc = run_zipapp(
        dist / "fm-dashboard.pyz", "hash-password", home=tmp_path, shiv_root=tmp_path / "c", stdin="s3cret passphrase\n"
    )
    assert proc.returncode == 0, proc.stderr
    hashed = proc.stdout.strip()
    assert bcrypt.checkpw(b"s3cret passphrase", hashed.encode())


def test_build_script_is_shellcheck_clean():
    proc = subprocess.run(["shellcheck", "packaging/build.sh"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
