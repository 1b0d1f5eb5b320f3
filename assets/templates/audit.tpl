<h1>Audit log</h1>
<p class="muted">Times in the server's time zone ({{zone}}).</p>
% if rows:
<table class="table audit">
<thead><tr><th>Time</th><th>User</th><th>Address</th><th>Action</th><th>Target</th><th>Result</th><th>Job</th></tr></thead>
<tbody>
% for r in rows:
<tr><td>{{r['local_time']}}</td><td>{{r['user']}}</td><td>{{r['address']}}</td><td>{{r['action']}}</td><td>{{r['target']}}</td><td>{{r['result']}}{{' (%d times in 10 min)' % r['count'] if r['count'] > 1 else ''}}</td><td>
% if r['job_id']:
<a href="/jobs/{{r['job_id']}}">{{r['job_id']}}</a>
% end
</td></tr>
% end
</tbody>
</table>
% else:
<p class="empty">Nothing recorded yet.</p>
% end
