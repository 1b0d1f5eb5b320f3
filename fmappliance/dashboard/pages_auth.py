"""Sign-in and sign-out: ``GET|POST /login``, ``GET|POST /logout``."""

from __future__ import annotations

import logging

import bottle

from fmappliance.dashboard import csrf, negotiation
from fmappliance.dashboard.passwords import TOO_LONG_MESSAGE, WRONG_CREDENTIALS_MESSAGE, PasswordTooLong
from fmappliance.dashboard.sessions import COOKIE_NAME, delete_cookie, set_cookie

log = logging.getLogger(__name__)

LOGIN_COOKIE_SECONDS = 3600
MAX_USERNAME = 64


def register(app: bottle.Bottle, ctx) -> None:
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
        body = ctx.page(
            "login",
            "Sign in",
            notices=[("error", error)] if error else [],
            login_csrf=csrf.login_token(ctx.secret_key, nonce),
            next_path=next_path,
            username=username,
        )
        bottle.response.status = status
        bottle.response.set_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            bottle.response.set_header(name, value)
        return body

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
        problem = csrf.origin_problem(request.environ)
        nonce = request.get_cookie(csrf.LOGIN_COOKIE) or ""
        if problem or not csrf.tokens_match(
            csrf.login_token(ctx.secret_key, nonce) if nonce else "", forms.getunicode(csrf.FIELD, default="")
        ):
            log.warning("refused login POST from %s: %s", address, problem or "bad or missing login token")
            return login_page(next_path, error="The sign-in form had expired; please try again.", status=403)

        username = (forms.getunicode("username", default="") or "").strip()[: MAX_USERNAME + 1]
        password = forms.getunicode("password", default="") or ""
        wait = ctx.throttle.retry_after(username, address)
        if wait:
            ctx.audit.record(user=username, address=address, action="login", result="throttled")
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
            ctx.audit.record(user=username, address=address, action="login", result="failed: password over 72 bytes")
            return login_page(next_path, error=TOO_LONG_MESSAGE, username=username, status=400)
        if not ok:
            ctx.throttle.failed(username, address)
            ctx.audit.record(user=username, address=address, action="login", result="failed")
            return login_page(next_path, error=WRONG_CREDENTIALS_MESSAGE, username=username, status=401)

        ctx.throttle.succeeded(username, address)
        old = ctx.session()
        if old is not None:
            ctx.sessions.destroy(old)
        raw_id, _ = ctx.sessions.create(username)
        secure = ctx.secure_cookies()
        response = bottle.HTTPResponse(status=303, headers={"Location": next_path, "Cache-Control": "no-store"})
        set_cookie(response, COOKIE_NAME, raw_id, secure=secure)
        delete_cookie(response, csrf.LOGIN_COOKIE, secure=secure, path="/login")
        ctx.audit.record(user=username, address=address, action="login", result="ok")
        return response

    def logout():
        session = ctx.session()
        ctx.sessions.destroy(session)
        ctx.audit.record(user=session.user, address=ctx.client_address(), action="logout", result="ok")
        response = bottle.HTTPResponse(status=303, headers={"Location": "/login", "Cache-Control": "no-store"})
        delete_cookie(response, COOKIE_NAME, secure=ctx.secure_cookies())
        return response

    app.get("/logout", callback=ctx.login_required(logout))
    app.post("/logout", callback=ctx.protected_post(logout))
