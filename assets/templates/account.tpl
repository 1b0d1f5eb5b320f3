<div class="page-head"><h1>Your account</h1></div>
<section class="card">
<p>Signed in as <strong>{{user_name}}</strong>, role <strong>{{role}}</strong>.</p>
% if totp_mode == 'off':
<p class="muted">Second sign-in factors are switched off on this server.</p>
% elif enrollment:
<p>Second factor: <span class="badge badge-ok">set up</span> &middot; {{enrollment.recovery_left}} recovery code(s) left.
If you lost your phone, an admin can reset it from Users.</p>
% else:
<p>Second factor: <span class="badge badge-warn">not set up</span></p>
<p><a href="/account/2fa">Set up an authenticator app</a></p>
% end
% if can('GET', '/account/users'):
<p><a href="/account/users">Users and their second factors</a></p>
% end
</section>
