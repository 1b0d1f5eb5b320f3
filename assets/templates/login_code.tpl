<section class="card login">
<h1>Second step</h1>
<p class="muted">Signing in as <strong>{{username}}</strong>. Enter the 6-digit code your authenticator app shows now, or one of your recovery codes.</p>
<form method="post" action="/login/code" class="stacked">
<input type="hidden" name="csrf_token" value="{{login_csrf}}">
<label for="code">Code</label>
<input id="code" name="code" autocomplete="one-time-code" inputmode="text" required autofocus maxlength="40">
<button type="submit" class="primary">Sign in</button>
</form>
<p class="muted"><a href="/login">Start again</a></p>
</section>
