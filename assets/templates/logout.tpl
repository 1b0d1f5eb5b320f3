<section class="card login">
<h1>Sign out</h1>
% if csrf_token:
<form method="post" action="/logout" class="stacked">
<input type="hidden" name="csrf_token" value="{{csrf_token}}">
<button type="submit" class="primary">Sign out</button>
</form>
% else:
<p>You are not signed in. <a href="/login">Sign in</a></p>
% end
</section>
