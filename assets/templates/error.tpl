<div class="page-head"><h1>{{heading}}</h1></div>
<div class="notice notice-error" role="alert">{{message}}</div>
<p class="actions error-ways"><a class="button primary" href="/dashboard">Back to the dashboard</a>
% if retry:
<a class="button" href="{{retry}}">Try this page again</a>
% end
</p>
