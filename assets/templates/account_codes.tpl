<div class="page-head"><h1>Your recovery codes</h1></div>
<section class="card">
<p>Your second factor is set up. Keep these recovery codes somewhere safe: each one signs you in once
when you do not have your phone. They are shown only now.</p>
<ul class="recovery-codes">
% for code in codes:
<li><code>{{code}}</code></li>
% end
</ul>
<p><a class="button primary" href="{{next_path}}">Continue</a></p>
</section>
