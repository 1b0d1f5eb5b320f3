<div class="page-head"><h1>Users</h1><p class="muted">Users and roles are set in dashboard.credentials of config.yaml.</p></div>
<section class="card">
<table class="table users">
<thead><tr><th>User</th><th>Role</th><th>Second factor</th><th>Actions</th></tr></thead>
<tbody>
% for r in rows:
<tr data-user="{{r['name']}}">
<td>{{r['name']}}</td><td>{{r['role']}}</td>
<td>
% if r['enrolled']:
<span class="badge badge-ok">set up</span> <span class="muted">{{r['recovery_left']}} recovery code(s) left</span>
% else:
<span class="badge badge-unknown">none</span>
% end
</td>
<td>
% if r['enrolled']:
<form class="actions" method="post" action="/account/users/{{r['qname']}}/reset-2fa"><input type="hidden" name="csrf_token" value="{{csrf_token}}"><button type="submit" class="warn">Reset second factor</button></form>
% end
</td>
</tr>
% end
</tbody>
</table>
</section>
