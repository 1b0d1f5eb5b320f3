<div class="page-head"><h1>Set up your second sign-in factor</h1></div>
<section class="card">
% if required:
<p>This server asks every user for a code from an authenticator app at sign-in. Set it up now to continue.</p>
% end
<ol>
<li>Scan this code with an authenticator app (Aegis, Google Authenticator, 1Password, ...):</li>
</ol>
<p><img class="qr" src="{{qr}}" alt="QR code of your sign-in key" width="250" height="250"></p>
<p>Or type the key: <code class="totp-key">{{key}}</code> <span class="muted">(time-based, 6 digits, 30 s)</span></p>
<ol start="2"><li>Enter the code the app shows:</li></ol>
<form method="post" action="/account/2fa" class="stacked">
<input type="hidden" name="csrf_token" value="{{csrf_token}}">
<input type="hidden" name="next" value="{{next_path}}">
<label for="code">Code</label>
<input id="code" name="code" autocomplete="one-time-code" inputmode="numeric" required maxlength="10" autofocus>
<button type="submit" class="primary">Confirm</button>
</form>
</section>
