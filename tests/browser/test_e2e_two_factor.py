"""Second sign-in factor in a real browser: the enrollment QR code is read the way a phone reads it
(a screenshot decoded by zxing), its secret gives the codes, and the user signs in with one."""

from __future__ import annotations

import io
import re
import time
import urllib.parse
from pathlib import Path

import pyotp
import pytest

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served_config():
    return {"dashboard": {"totp": "required"}}


def secret_from_qr(page) -> str:
    import zxingcpp
    from PIL import Image

    shot = page.locator("img.qr").screenshot()
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(shot)))
    assert len(found) == 1, "the QR code could not be read"
    uri = urllib.parse.urlsplit(found[0].text)
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    params = urllib.parse.parse_qs(uri.query)
    assert params["issuer"] == ["fmappliance"]
    return params["secret"][0]


def test_enroll_from_the_qr_code_then_sign_in_with_a_code(watch):
    page = watch.page
    watch.goto("/login")
    watch.sign_in()
    # Straight to the setup, and nothing else is reachable until it is done.
    assert "/account/2fa" in page.url, page.url
    watch.assert_clean()
    watch.goto("/dashboard")
    assert "/account/2fa" in page.url
    secret = secret_from_qr(page)
    # The key shown as text is the same secret.
    assert page.locator("code.totp-key").inner_text().replace(" ", "") == secret

    page.fill("#code", pyotp.TOTP(secret).now())
    with page.expect_navigation():
        page.get_by_role("button", name="Confirm").click()
    watch.assert_clean()
    codes = page.locator(".recovery-codes code").all_inner_texts()
    assert len(codes) == 10
    # The codes can be saved as a file ...
    with page.expect_download() as info:
        page.get_by_role("link", name="Download as a text file").click()
    saved = Path(info.value.path()).read_text().splitlines()
    assert all(code in saved for code in codes)
    # ... or copied (selected for Ctrl+C where the clipboard is not available).
    page.get_by_role("button", name="Copy them").click()
    page.locator(".copy-status").filter(has_text=re.compile("Copied|Selected")).wait_for()
    # "Continue" waits for "I have saved these codes".
    page.get_by_role("button", name="Continue").click()
    assert "/account/2fa" in page.url
    assert page.locator("#codes-saved").evaluate("box => box.validity.valueMissing")
    page.check("#codes-saved")
    with page.expect_navigation():
        page.get_by_role("button", name="Continue").click()
    assert page.url.endswith("/dashboard"), page.url
    watch.assert_clean()

    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    watch.sign_in()
    assert page.locator("form[action='/login/code']").count() == 1, page.url
    watch.assert_clean()
    # The enrollment code is spent; the next time step's code is within the allowed skew.
    page.fill("#code", pyotp.TOTP(secret).at(time.time() + 30))
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/dashboard"), page.url
    assert page.locator("section.stack").count() >= 1
    watch.assert_clean()
