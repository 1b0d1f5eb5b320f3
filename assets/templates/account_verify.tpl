<section class="card login">
<h1>Confirm it is you</h1>
<p class="muted">This action changes or replaces data. Confirm it is you: back on the page, the action goes on by itself (if it does not, repeat it). The confirmation lasts 5 minutes.</p>
<form method="post" action="/account/verify" class="stacked">
<input type="hidden" name="csrf_token" value="{{csrf_token}}">
<input type="hidden" name="next" value="{{next_path}}">
% if with_code:
<label for="code">Code from your authenticator app</label>
<input id="code" name="code" autocomplete="one-time-code" inputmode="text" required maxlength="40" autofocus>
% else:
<label for="password">Your password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required autofocus>
% end
<button type="submit" class="primary">Confirm</button>
</form>
</section>
