"""The signed-in user's account: ``/account``, second-factor setup ``/account/2fa``,
step-up confirmation ``/account/verify`` and, for admins, ``/account/users`` with the
reset of another user's second factor.

The QR code is an SVG image in a ``data:`` URL (segno, no script, no inline style), which
the CSP's ``img-src 'self' data:`` allows.  The key is also shown as text for apps that
cannot scan.  Recovery codes are shown once, on the answer to the confirming POST.

Who reaches each route is decided by the table in authorize.py (``/account/users`` and the
reset: admins, the reset with a fresh code).
"""

from __future__ import annotations

import logging
import urllib.parse

import bottle

from fmappliance.dashboard import negotiation
from fmappliance.dashboard.passwords import PasswordTooLong
from fmappliance.dashboard.second_factor import provisioning_uri
from fmappliance.dashboard.sessions import STAGE_FULL

log = logging.getLogger(__name__)


def qr_data_url(uri: str) -> str:
    import segno  # only while a user enrols a second factor (memory at rest)

    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2)


def spaced_key(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def codes_values(user: str, codes: list[str], next_path: str) -> dict:
    """The recovery-codes page: the codes, a text file of them (a ``data:`` link: nothing is
    kept on the server to fetch later) and where "Continue" goes, as a GET form's action
    and hidden fields (a form drops its action's own query)."""
    text = f"fmappliance recovery codes for {user} (each signs in once)\n\n" + "\n".join(codes) + "\n"
    path, _, query = next_path.partition("?")
    return {
        "codes": codes,
        "codes_text": text,
        "download_href": "data:text/plain;charset=utf-8," + urllib.parse.quote(text),
        "download_name": "fmappliance-recovery-codes-" + "".join(c if c.isalnum() else "-" for c in user) + ".txt",
        "next_action": path or "/dashboard",
        "next_fields": urllib.parse.parse_qsl(query),
        "next_path": next_path,
    }


def register(app: bottle.Bottle, ctx) -> None:
    def next_from_query(default: str = "/account") -> str:
        return negotiation.safe_local_path(
            bottle.request.query.get("next") or bottle.request.forms.getunicode("next", default="") or "",
            default=default,
        )

    def enroll_page(next_path: str, *, error: str = "", status: int = 200):
        user = ctx.user()
        secret = ctx.second_factors.pending_secret(user, ctx.session().id_hash)
        bottle.response.status = status
        bottle.response.set_header("Cache-Control", "no-store")
        return ctx.page(
            "account_2fa",
            "Second sign-in factor",
            notices=[("error", error)] if error else [],
            qr=qr_data_url(provisioning_uri(secret, user)),
            key=spaced_key(secret),
            next_path=next_path,
            required=ctx.totp_mode == "required",
        )

    @app.get("/account")
    @ctx.login_required
    def account():
        user = ctx.user()
        enrollment = ctx.second_factors.enrollment(user)
        bottle.response.set_header("Cache-Control", "no-store")
        if negotiation.wants_json(bottle.request):
            return ctx.json_response(
                {"user": user, "role": ctx.role(), "totp": ctx.totp_mode, "second_factor": enrollment is not None}
            )
        return ctx.page(
            "account",
            "Your account",
            active="account",
            user_name=user,
            role=ctx.role(),
            totp_mode=ctx.totp_mode,
            enrollment=enrollment,
        )

    @app.get("/account/2fa")
    @ctx.login_required
    def two_factor_form():
        if ctx.totp_mode == "off":
            return ctx.fail(404, "Second sign-in factors are switched off on this server (dashboard.totp: off).")
        if ctx.second_factors.enrollment(ctx.user()) is not None and ctx.session().stage == STAGE_FULL:
            return bottle.HTTPResponse(status=303, headers={"Location": "/account"})
        return enroll_page(next_from_query())

    @app.post("/account/2fa")
    @ctx.protected_post
    def two_factor_confirm():
        if ctx.totp_mode == "off":
            return ctx.fail(404, "Second sign-in factors are switched off on this server (dashboard.totp: off).")
        session, user, address = ctx.session(), ctx.user(), ctx.client_address()
        next_path = next_from_query(default="/dashboard")
        if ctx.second_factors.enrollment(user) is not None:
            return ctx.fail(409, "You already have a second factor; an admin can reset it from Users.")
        wait = ctx.throttle.retry_after(user, address)
        if wait:
            return enroll_page(next_path, error=f"Too many wrong codes. Wait {wait} seconds and try again.", status=429)
        codes = ctx.second_factors.confirm(
            user, bottle.request.forms.getunicode("code", default="") or "", session.id_hash
        )
        if codes is None:
            ctx.throttle.failed(user, address)
            ctx.audit.record_repeat(user=user, address=address, action="enroll_2fa", result="failed: wrong code")
            return enroll_page(
                next_path,
                error="That code does not match; check the time on your phone and enter the current code.",
                status=400,
            )
        ctx.sessions.update(session, stage=STAGE_FULL, verified_at=ctx.clock())
        ctx.audit.record(user=user, address=address, action="enroll_2fa", result="ok")
        bottle.response.set_header("Cache-Control", "no-store")
        return ctx.page("account_codes", "Recovery codes", **codes_values(user, codes, next_path))

    @app.get("/account/verify")
    @ctx.login_required
    def verify_form():
        bottle.response.set_header("Cache-Control", "no-store")
        return ctx.page(
            "account_verify",
            "Confirm it is you",
            next_path=next_from_query(default="/dashboard"),
            with_code=ctx.needs_second_factor(ctx.user()),
        )

    @app.post("/account/verify")
    @ctx.protected_post
    def verify_submit():
        session, user, address = ctx.session(), ctx.user(), ctx.client_address()
        next_path = next_from_query(default="/dashboard")
        with_code = ctx.needs_second_factor(user)
        # Counted per account whatever the address, like the sign-in's code step (issue 21.3).
        wait = ctx.throttle.retry_after(user, address, second_step=True)
        if wait:
            return ctx.fail(429, f"Too many wrong attempts. Wait {wait} seconds and try again.")
        if with_code:
            ok = ctx.second_factors.verify(user, bottle.request.forms.getunicode("code", default="") or "") is not None
        else:
            # Without a second factor, the password is what confirms a destructive action.
            try:
                ok = ctx.passwords.check(user, bottle.request.forms.getunicode("password", default="") or "")
            except PasswordTooLong:
                ok = False
        if not ok:
            ctx.throttle.failed(user, address, second_step=True)
            ctx.audit.record_repeat(user=user, address=address, action="step_up", result="failed")
            bottle.response.status = 401
            return ctx.page(
                "account_verify",
                "Confirm it is you",
                next_path=next_path,
                with_code=with_code,
                notices=[("error", "That did not match; try again.")],
            )
        ctx.throttle.succeeded(user, address, second_step=True)
        ctx.sessions.update(session, verified_at=ctx.clock())
        ctx.audit.record(user=user, address=address, action="step_up", result="ok")
        if negotiation.wants_json(bottle.request):
            return ctx.json_response({"success": True, "message": "Confirmed; repeat the action."})
        return bottle.HTTPResponse(status=303, headers={"Location": next_path, "Cache-Control": "no-store"})

    @app.get("/account/users")
    @ctx.login_required
    def users_page():
        enrolled = ctx.second_factors.enrolled_users()
        rows = [
            {
                "name": name,
                "qname": urllib.parse.quote(name, safe=""),
                "role": role,
                "enrolled": name in enrolled,
                "recovery_left": enrolled[name].recovery_left if name in enrolled else 0,
            }
            for name, (_, role) in sorted(ctx.users.items())
        ]
        bottle.response.set_header("Cache-Control", "no-store")
        if negotiation.wants_json(bottle.request):
            return ctx.json_response(
                {
                    "users": [{k: r[k] for k in ("name", "role", "enrolled", "recovery_left")} for r in rows],
                    "totp": ctx.totp_mode,
                }
            )
        return ctx.page("account_users", "Users", active="users", rows=rows, totp_mode=ctx.totp_mode)

    @app.post("/account/users/<name>/reset-2fa")
    @ctx.protected_post
    def reset_two_factor(name):
        if name not in ctx.users:
            return ctx.fail(404, "There is no such user in dashboard.credentials.")
        had = ctx.second_factors.reset(name)
        ended = ctx.sessions.destroy_user(name) if name != ctx.user() else 0
        ctx.audit.record(
            user=ctx.user(),
            address=ctx.client_address(),
            action="reset_2fa",
            target=name,
            result="ok" if had else "ok (had none)",
        )
        message = (
            f"The second factor of {name} was reset"
            + (f" and {ended} session(s) ended" if ended else "")
            + "; they set it up again at their next sign-in."
        )
        if negotiation.wants_json(bottle.request):
            return ctx.json_response({"success": True, "message": message})
        ctx.sessions.add_flash(ctx.session(), "ok", message)
        return bottle.HTTPResponse(status=303, headers={"Location": "/account/users"})
