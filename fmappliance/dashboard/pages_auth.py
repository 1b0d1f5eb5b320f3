"""Sign-in and sign-out: ``GET|POST /login``, ``GET|POST /login/code``, ``GET|POST /logout``.

Sign-in takes up to two steps.  The password first; then, for a user with a second factor
(and ``dashboard.totp`` not off), a code from the authenticator app or a recovery code on
``/login/code`` (the password's answer is that form).  Between the two there is no session, only a pending sign-in held in
memory for a few minutes behind a random cookie (a restart just asks for the password
again).  A user who must enroll (``totp: required``) gets a session that can reach only
``/account/2fa`` and sign-out.  Both steps count in the login throttle and the audit log.
A pending sign-in takes at most :data:`MAX_WRONG_CODES` wrong codes, then it is dropped and
the password (bcrypt-priced) is due again; wrong codes also count per account whatever the
address (login_throttle.py), so fresh addresses buy no fresh guesses (issue 21.3).

Sign-out is a POST with the session's CSRF token (a GET only shows the button), so no
other page can sign anyone out.
"""

from __future__ import annotations

import logging
import secrets
import threading
import urllib.parse

import bottle

from fmappliance.dashboard import csrf, negotiation
from fmappliance.dashboard.passwords import TOO_LONG_MESSAGE, WRONG_CREDENTIALS_MESSAGE, PasswordTooLong
from fmappliance.dashboard.sessions import STAGE_ENROLL, STAGE_FULL, delete_cookie, set_cookie

log = logging.getLogger(__name__)

LOGIN_COOKIE_SECONDS = 3600
MAX_USERNAME = 64
PENDING_COOKIE = "fmpending"
PENDING_SECONDS = 5 * 60
MAX_PENDING = 1000
#: Wrong codes one pending sign-in takes before the password is due again.
MAX_WRONG_CODES = 5
TOO_MANY_CODES_MESSAGE = "Too many wrong codes for this sign-in; enter your password again, then a current code."
WRONG_CODE_MESSAGE = (
    "That code is not valid (or was already used). Enter the current code from your app, or a recovery code."
)


class PendingSignIns:
    """Password accepted, code still due: nonce -> (user, fingerprint, next path, expiry)."""

    def __init__(self, clock):
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, str, str, float]] = {}
        self._wrong: dict[str, int] = {}  # nonce -> wrong codes so far

    def add(self, user: str, fingerprint: str, next_path: str) -> str:
        nonce = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            if len(self._entries) >= MAX_PENDING:
                for key, _ in sorted(self._entries.items(), key=lambda kv: kv[1][3])[: MAX_PENDING // 2]:
                    del self._entries[key]
                    self._wrong.pop(key, None)
            self._entries[nonce] = (user, fingerprint, next_path, now + PENDING_SECONDS)
        return nonce

    def get(self, nonce: str | None):
        if not nonce:
            return None
        with self._lock:
            entry = self._entries.get(nonce)
            if entry and entry[3] < self.clock():
                del self._entries[nonce]
                self._wrong.pop(nonce, None)
                entry = None
        return entry

    def wrong_code(self, nonce: str) -> bool:
        """Count a wrong code; True when that was the last one allowed (the sign-in is dropped)."""
        with self._lock:
            if nonce not in self._entries:
                return True
            self._wrong[nonce] = self._wrong.get(nonce, 0) + 1
            if self._wrong[nonce] < MAX_WRONG_CODES:
                return False
            self._entries.pop(nonce, None)
            self._wrong.pop(nonce, None)
            return True

    def drop(self, nonce: str) -> None:
        with self._lock:
            self._entries.pop(nonce, None)
            self._wrong.pop(nonce, None)


def register(app: bottle.Bottle, ctx) -> None:
    pending = PendingSignIns(ctx.clock)

    def no_store(status: int, headers=None):
        bottle.response.status = status
        bottle.response.set_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            bottle.response.set_header(name, value)

    def login_page(next_path: str, *, error: str = "", username: str = "", status: int = 200, headers=None):
        nonce = csrf.new_login_nonce()
        # Pre-session CSRF (double submit): the form's token is an HMAC of this cookie's value.
        set_cookie(
            bottle.response,
            csrf.LOGIN_COOKIE,
            nonce,
            secure=ctx.secure_cookies(),
            path="/login",
            max_age=LOGIN_COOKIE_SECONDS,
        )
        token = csrf.login_token(ctx.secret_key, nonce)
        body = ctx.page(
            "login",
            "Sign in",
            notices=[("error", error)] if error else [],
            page_token=token,
            login_csrf=token,
            next_path=next_path,
            username=username,
        )
        no_store(status, headers)
        return body

    def code_page(nonce: str, user: str, *, error: str = "", status: int = 200, headers=None):
        token = csrf.login_token(ctx.secret_key, "code:" + nonce)
        body = ctx.page(
            "login_code",
            "Second step",
            notices=[("error", error)] if error else [],
            page_token=token,
            login_csrf=token,
            username=user,
        )
        no_store(status, headers)
        return body

    def throttled(user: str, address: str, *, second_step: bool = False) -> int:
        wait = ctx.throttle.retry_after(user, address, second_step=second_step)
        if wait:
            ctx.audit.record_repeat(user=user, address=address, action="login", result="throttled")
        return wait

    def start_session(
        user: str, next_path: str, *, stage: str = STAGE_FULL, how: str = "ok", second_step: bool = False
    ) -> bottle.HTTPResponse:
        address = ctx.client_address()
        ctx.throttle.succeeded(user, address, second_step=second_step)
        old = ctx.session()
        if old is not None:
            ctx.sessions.destroy(old)
        raw_id, _ = ctx.sessions.create(user, fingerprint=ctx.fingerprint(user), stage=stage)
        secure = ctx.secure_cookies()
        location = next_path
        if stage == STAGE_ENROLL:
            location = "/account/2fa?" + urllib.parse.urlencode({"next": next_path})
        response = bottle.HTTPResponse(status=303, headers={"Location": location, "Cache-Control": "no-store"})
        set_cookie(response, ctx.session_cookie_name(), raw_id, secure=secure)
        delete_cookie(response, csrf.LOGIN_COOKIE, secure=secure, path="/login")
        delete_cookie(response, PENDING_COOKIE, secure=secure, path="/login")
        ctx.audit.record(user=user, address=address, action="login", result=how)
        return response

    def form_token_ok(nonce: str) -> str | None:
        """Why this sign-in POST is refused (cross-site or a stale form), or None."""
        request = bottle.request
        problem = csrf.origin_problem(request.environ)
        expected = csrf.login_token(ctx.secret_key, nonce) if nonce else ""
        if problem or not csrf.tokens_match(expected, request.forms.getunicode(csrf.FIELD, default="")):
            log.warning(
                "refused sign-in POST from %s: %s", ctx.client_address(), problem or "bad or missing form token"
            )
            return "The sign-in form had expired; please try again."
        return None

    @app.get("/login")
    def login_form():
        next_path = negotiation.safe_local_path(bottle.request.query.get("next"))
        if ctx.session() is not None:
            return bottle.HTTPResponse(status=303, headers={"Location": next_path})
        return login_page(next_path)

    @app.post("/login")
    def login_submit():
        request = bottle.request
        forms = request.forms
        next_path = negotiation.safe_local_path(forms.getunicode("next", default="") or request.query.get("next"))
        address = ctx.client_address()
        refused = form_token_ok(request.get_cookie(csrf.LOGIN_COOKIE) or "")
        if refused:
            return login_page(next_path, error=refused, status=403)

        username = (forms.getunicode("username", default="") or "").strip()[: MAX_USERNAME + 1]
        password = forms.getunicode("password", default="") or ""
        wait = throttled(username, address)
        if wait:
            return login_page(
                next_path,
                error=f"Too many failed sign-ins. Wait {wait} seconds and try again.",
                username=username,
                status=429,
                headers={"Retry-After": str(wait)},
            )
        try:
            ok = len(username) <= MAX_USERNAME and ctx.passwords.check(username, password)
        except PasswordTooLong:
            ctx.throttle.failed(username, address)
            ctx.audit.record_repeat(
                user=username, address=address, action="login", result="failed: password over 72 bytes"
            )
            return login_page(next_path, error=TOO_LONG_MESSAGE, username=username, status=400)
        if not ok:
            ctx.throttle.failed(username, address)
            ctx.audit.record_repeat(user=username, address=address, action="login", result="failed")
            return login_page(next_path, error=WRONG_CREDENTIALS_MESSAGE, username=username, status=401)

        if ctx.needs_second_factor(username):
            nonce = pending.add(username, ctx.fingerprint(username), next_path)
            set_cookie(
                bottle.response,
                PENDING_COOKIE,
                nonce,
                secure=ctx.secure_cookies(),
                path="/login",
                max_age=PENDING_SECONDS,
            )
            # The code form comes in this answer (no redirect): one round trip less per sign-in.
            return code_page(nonce, username)
        if ctx.totp_mode == "required":
            return start_session(username, next_path, stage=STAGE_ENROLL, how="ok, second factor to set up")
        return start_session(username, next_path)

    def pending_sign_in():
        nonce = bottle.request.get_cookie(PENDING_COOKIE) or ""
        entry = pending.get(nonce)
        # A password changed meanwhile voids the pending sign-in.
        if entry is None or entry[1] != ctx.fingerprint(entry[0]):
            return nonce, None
        return nonce, entry

    @app.get("/login/code")
    def code_form():
        nonce, entry = pending_sign_in()
        if entry is None:
            return bottle.HTTPResponse(status=303, headers={"Location": "/login"})
        return code_page(nonce, entry[0])

    @app.post("/login/code")
    def code_submit():
        nonce, entry = pending_sign_in()
        if entry is None:
            return login_page(
                negotiation.DEFAULT_LANDING, error="The sign-in took too long; enter your password again.", status=403
            )
        user, _, next_path, _ = entry
        address = ctx.client_address()
        refused = form_token_ok("code:" + nonce)
        if refused:
            return code_page(nonce, user, error=refused, status=403)
        wait = throttled(user, address, second_step=True)
        if wait:
            return code_page(
                nonce,
                user,
                error=f"Too many wrong codes. Wait {wait} seconds and try again.",
                status=429,
                headers={"Retry-After": str(wait)},
            )
        used = ctx.second_factors.verify(user, bottle.request.forms.getunicode("code", default="") or "")
        if used is None:
            ctx.throttle.failed(user, address, second_step=True)
            ctx.audit.record_repeat(user=user, address=address, action="login", result="failed: wrong code")
            if pending.wrong_code(nonce):
                # Back to the password step: each new round of guesses costs a bcrypt check.
                delete_cookie(bottle.response, PENDING_COOKIE, secure=ctx.secure_cookies(), path="/login")
                return login_page(next_path, error=TOO_MANY_CODES_MESSAGE, username=user, status=401)
            return code_page(nonce, user, error=WRONG_CODE_MESSAGE, status=401)
        pending.drop(nonce)
        return start_session(
            user, next_path, how="ok" if used == "code" else "ok, with a recovery code", second_step=True
        )

    @app.get("/logout")
    def logout_page():
        # Signing out changes state: only the POST below does it (with the CSRF token).
        bottle.response.set_header("Cache-Control", "no-store")
        return ctx.page("logout", "Sign out")

    @app.post("/logout")
    @ctx.protected_post
    def logout():
        session = ctx.session()
        ctx.sessions.destroy(session)
        ctx.audit.record(user=session.user, address=ctx.client_address(), action="logout", result="ok")
        response = bottle.HTTPResponse(status=303, headers={"Location": "/login", "Cache-Control": "no-store"})
        delete_cookie(response, ctx.session_cookie_name(), secure=ctx.secure_cookies())
        return response
