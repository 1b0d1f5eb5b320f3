<section class="card login">
<h1>Sign in</h1>
<form method="post" action="/login" class="stacked">
<input type="hidden" name="csrf_token" value="{{login_csrf}}">
<input type="hidden" name="next" value="{{next_path}}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required value="{{username}}" autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" class="primary">Sign in</button>
</form>
</section>
