<h1>Fleet</h1>
<p class="muted">Every server of this dashboard's fleet, problems first; refreshed every 10 s.</p>
% if get('joined'):
<section class="card join-token" role="status">
<h2>Join token{{' for ' + joined['name'] if joined['name'] else ''}}</h2>
<p>Works once, until {{joined['expires']}}, and is not shown again. On the server to add, run:</p>
<pre class="join-command">{{joined['command']}}</pre>
</section>
% end
<div hx-get="/fleet" hx-trigger="every 10s" hx-swap="innerHTML">
{{!partial('fleet_table', servers=servers)}}
</div>
% if get('manage'):
<section class="card fleet-manage">
<h2>Add a server</h2>
<form method="post" action="/fleet/tokens"><input type="hidden" name="csrf_token" value="{{csrf_token}}">
<label>Name <input name="name" pattern="[a-z][a-z0-9-]{0,31}" required placeholder="erp-b"></label>
<button type="submit" class="primary">Make a join token</button></form>
<h2>Remove a server</h2>
% for s in servers:
% if s.get('address') != 'local':
<form method="post" action="/fleet/servers/{{s['name']}}/remove" class="inline"><input type="hidden" name="csrf_token" value="{{csrf_token}}">
<label>Type <b>{{s['name']}}</b> to remove it <input name="confirm" required></label>
<button type="submit" class="warn">Remove {{s['name']}}</button></form>
% end
% end
</section>
% end
