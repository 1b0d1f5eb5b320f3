"""Join tokens, server names, and the hub/agent certificates made with the real openssl."""

from __future__ import annotations

import ssl
import subprocess

import pytest

from fmappliance.fleet import certs, token


def test_a_token_round_trips_and_hides_its_secret():
    made = token.make("ab" * 32)
    text = str(made)
    assert text.startswith("FMJ1" + "ab" * 32 + "::")
    assert len(text) == 4 + 64 + 2 + 8 + 1 + 32
    assert token.parse("  " + text + "\n") == made
    assert made.secret not in repr(made)
    assert token.make("ab" * 32).secret != made.secret


@pytest.mark.parametrize(
    "text",
    [
        "",
        "FMJ1" + "ab" * 32,
        "FMJ1" + "AB" * 32 + "::abcdefgh." + "x" * 32,  # uppercase hash
        "FMJ1" + "ab" * 31 + "::abcdefgh." + "x" * 32,  # short hash
        "FMJ1" + "ab" * 32 + "::abcdefg." + "x" * 32,  # short id
        "FMJ1" + "ab" * 32 + "::abcdefgh." + "x" * 31,  # short secret
        "FMJ2" + "ab" * 32 + "::abcdefgh." + "x" * 32,
        "K10" + "ab" * 32 + "::abcdefgh." + "x" * 32,
    ],
)
def test_malformed_tokens_are_refused_without_echo(text):
    with pytest.raises(token.BadToken) as caught:
        token.parse(text)
    assert "fm-dashboard fleet token create" in str(caught.value)
    if text:
        assert text not in str(caught.value)


@pytest.mark.parametrize("name", ["a", "erp-b", "x" + "1" * 31, "web-01"])
def test_good_server_names(name):
    assert token.is_valid_server_name(name)


@pytest.mark.parametrize("name", ["", "1erp", "Erp", "erp_b", "erp.b", "x" * 33, "-a", "erp b", "érp", None, 5])
def test_bad_server_names(name):
    assert not token.is_valid_server_name(name)


def test_hashes_compare_in_constant_time_helpers():
    assert token.same_hash(token.secret_hash("x"), token.secret_hash("x"))
    assert not token.same_hash(token.secret_hash("x"), token.secret_hash("y"))


def _text(path):
    return subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-text"], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_hub_certificate_is_a_pathlen0_ca_for_100_years_and_never_overwritten(tmp_path):
    key, cert = tmp_path / "hub.key", tmp_path / "hub.crt"
    certs.make_key(key)
    pin = certs.make_hub_certificate(key, cert)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    text = _text(cert)
    assert "CA:TRUE, pathlen:0" in text
    assert "Certificate Sign" in text
    assert "ASN1 OID: prime256v1" in text
    assert "Not After : " in text and " 21" in text.split("Not After : ")[1].splitlines()[0]  # year 21xx
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    import hashlib

    assert pin == hashlib.sha256(der).hexdigest()
    key_before, cert_before = key.read_bytes(), cert.read_bytes()
    certs.make_key(key)
    assert certs.make_hub_certificate(key, cert) == pin
    assert (key.read_bytes(), cert.read_bytes()) == (key_before, cert_before)


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_the_hub_signs_a_csr_as_a_client_certificate_it_can_verify(tmp_path):
    certs.make_key(tmp_path / "hub.key")
    certs.make_hub_certificate(tmp_path / "hub.key", tmp_path / "hub.crt")
    certs.make_key(tmp_path / "agent.key")
    csr = certs.make_csr(tmp_path / "agent.key", "erp-b")
    pem = certs.sign_csr(csr, tmp_path / "hub.key", tmp_path / "hub.crt", "erp-b")
    (tmp_path / "agent.crt").write_text(pem)
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "hub.crt"),
            "-purpose",
            "sslclient",
            str(tmp_path / "agent.crt"),
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    assert "CN = fm-uplink erp-b" in _text(tmp_path / "agent.crt")
    # the private key never appears in what is sent
    assert "PRIVATE KEY" not in csr


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_a_forged_or_garbage_csr_is_refused(tmp_path):
    certs.make_key(tmp_path / "hub.key")
    certs.make_hub_certificate(tmp_path / "hub.key", tmp_path / "hub.crt")
    certs.make_key(tmp_path / "agent.key")
    csr = certs.make_csr(tmp_path / "agent.key", "erp-b")
    lines = csr.splitlines()
    middle = len(lines) // 2
    broken = lines[middle][:10] + ("A" if lines[middle][10] != "A" else "B") + lines[middle][11:]
    tampered = "\n".join(lines[:middle] + [broken] + lines[middle + 1 :]) + "\n"
    for bad in ("hello", tampered, "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 9000):
        with pytest.raises(certs.CertError):
            certs.sign_csr(bad, tmp_path / "hub.key", tmp_path / "hub.crt", "erp-b")
