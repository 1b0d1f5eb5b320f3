"""Keys, certificates and CSRs through the ``openssl`` CLI (argv lists only; no secret in argv).

Why the CLI and not ``cryptography``: these run once per join, install.sh already needs
openssl, and a compiled wheel in both zipapps would be the price of ~40 lines.

- The hub: EC P-256 key and a self-signed certificate (``CA:TRUE, pathlen:0``, keyCertSign,
  100 years).  Dates are never checked by either side (the registry is the revocation), so the
  long validity only keeps other tools quiet.
- A server: its own key (never leaves it) and a CSR; the hub signs it as a client certificate.
- The pin: sha256 of a certificate's DER, 64 lowercase hex digits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import ssl
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

OPENSSL = "openssl"
DAYS = 36500
OPENSSL_TIMEOUT = 30
MAX_CSR_BYTES = 8 * 1024

HUB_EXTENSIONS = (
    "basicConstraints=critical,CA:TRUE,pathlen:0",
    "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    "subjectKeyIdentifier=hash",
)
AGENT_EXTENSIONS = """[v3_agent]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid:always
"""


class CertError(Exception):
    """openssl failed or its input was not what it should be; ``str()`` is for the operator."""


def _run(argv: list[str], stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            timeout=OPENSSL_TIMEOUT,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise CertError("openssl is not installed (apt install openssl)") from None
    except subprocess.TimeoutExpired:
        raise CertError(f"openssl {argv[1]} did not finish within {OPENSSL_TIMEOUT} s") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        log.debug("openssl %s failed: %s", argv[1], detail)
        raise CertError(f"openssl {argv[1]} failed: {detail[-1] if detail else 'exit ' + str(done.returncode)}")
    return done.stdout


def sha256_of_pem(pem: str | bytes) -> str:
    """The pin of a PEM certificate: sha256 of its DER, 64 lowercase hex digits."""
    text = pem.decode("ascii") if isinstance(pem, bytes) else pem
    try:
        der = ssl.PEM_cert_to_DER_cert(text.strip() + "\n")
    except ValueError:
        raise CertError("that is not a PEM certificate") from None
    return sha256_of_der(der)


def sha256_of_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` atomically, never replacing an existing file (FileExistsError)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if path exists: nothing is overwritten
    finally:
        os.unlink(tmp)


def make_key(path: Path) -> None:
    """An EC P-256 private key in ``path`` (mode 0600); an existing file is kept."""
    path = Path(path)
    if path.exists():
        return
    pem = _run([OPENSSL, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
    write_private(path, pem)


def make_hub_certificate(key_path: Path, cert_path: Path, common_name: str = "fmappliance fleet hub") -> str:
    """Self-signed CA certificate of the hub key in ``cert_path`` unless it exists; returns its sha256."""
    cert_path = Path(cert_path)
    if not cert_path.exists():
        argv = [OPENSSL, "req", "-new", "-x509", "-key", str(key_path), "-days", str(DAYS), "-sha256"]
        argv += ["-subj", "/CN=" + common_name, "-set_serial", str(_serial())]
        for ext in HUB_EXTENSIONS:
            argv += ["-addext", ext]
        write_private(cert_path, _run(argv), mode=0o644)
    return sha256_of_pem(cert_path.read_bytes())


def make_csr(key_path: Path, server: str) -> str:
    """A CSR for ``key_path`` (PEM); the subject names the server but the hub trusts only the registry."""
    return _run([OPENSSL, "req", "-new", "-key", str(key_path), "-subj", f"/CN=fm-uplink {server}", "-sha256"]).decode(
        "ascii"
    )


def sign_csr(csr_pem: str, ca_key: Path, ca_cert: Path, server: str) -> str:
    """The hub signs a server's CSR (after checking its self-signature); returns the certificate PEM.

    The subject is set by the hub (``/CN=fm-uplink <server>``), not taken from the request.
    """
    data = csr_pem.encode("ascii", "replace") if isinstance(csr_pem, str) else csr_pem
    if len(data) > MAX_CSR_BYTES or b"-----BEGIN CERTIFICATE REQUEST-----" not in data:
        raise CertError("csr_pem is not a PEM certificate request")
    with tempfile.TemporaryDirectory(prefix="fm-sign-") as tmp:
        csr_path = Path(tmp) / "req.pem"
        ext_path = Path(tmp) / "ext.cnf"
        csr_path.write_bytes(data)
        ext_path.write_text(AGENT_EXTENSIONS)
        _run([OPENSSL, "req", "-verify", "-noout", "-in", str(csr_path)])
        argv = [OPENSSL, "x509", "-req", "-in", str(csr_path), "-CA", str(ca_cert), "-CAkey", str(ca_key)]
        argv += ["-set_serial", str(_serial()), "-days", str(DAYS), "-sha256", "-subj", f"/CN=fm-uplink {server}"]
        argv += ["-extfile", str(ext_path), "-extensions", "v3_agent"]
        return _run(argv).decode("ascii")


def _serial() -> int:
    return secrets.randbits(126) + 1
