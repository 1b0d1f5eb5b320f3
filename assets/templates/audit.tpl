<h1>Audit log</h1>
<form class="card audit-filter" method="get" action="/audit">
<div class="form-grid">
<div class="field"><label for="audit-user">User</label><input id="audit-user" name="user" value="{{chosen['user']}}" autocomplete="off" spellcheck="false"></div>
<div class="field"><label for="audit-action">Action</label><select id="audit-action" name="action">
<option value="">any</option>
% for a in actions:
<option value="{{a}}"{{!' selected' if a == chosen['action'] else ''}}>{{a}}</option>
% end
</select></div>
<div class="field"><label for="audit-target">Target contains</label><input id="audit-target" name="target" value="{{chosen['target']}}" autocomplete="off" spellcheck="false"></div>
<div class="field{{' field-invalid' if problem else ''}}"><label for="audit-day">Day <span class="muted">({{zone}})</span></label><input id="audit-day" name="day" type="date" value="{{chosen['day']}}">
% if problem:
<p class="field-error" data-field="day">{{problem}}</p>
% end
</div>
</div>
<button type="submit" class="primary">Filter</button>
% if filtered:
<a href="/audit">Show everything</a>
% end
</form>
<p class="muted audit-count" data-total="{{total}}">
% if rows:
Rows {{first}}–{{last}} of {{total}}{{' matching' if filtered else ''}}, newest first; times in the server's time zone ({{zone}}).
% end
</p>
% if rows:
<table class="table audit">
<thead><tr><th>Time</th><th>User</th><th>Address</th><th>Action</th><th>Target</th><th>Result</th><th>Job</th><th>Server</th></tr></thead>
<tbody>
% for r in rows:
<tr><td data-label="Time">{{r['local_time']}}</td><td data-label="User">{{r['user']}}</td><td data-label="Address">{{r['address']}}</td><td data-label="Action">{{r['action']}}</td><td data-label="Target">{{r['target']}}</td><td data-label="Result">{{r['result']}}{{' (%d times in 10 min)' % r['count'] if r['count'] > 1 else ''}}</td><td data-label="Job">
% if r['job_id']:
<a href="{{r['job_href']}}">{{r['job_id']}}</a>
% if r['outcome']:
<span class="badge {{r['outcome']['badge']}}" data-outcome="{{r['outcome']['status']}}" title="{{r['outcome']['message']}}">{{r['outcome']['status']}}</span>
% end
% end
</td><td data-label="Server">{{r.get('server', '')}}</td></tr>
% end
</tbody>
</table>
% elif filtered:
<p class="empty">Nothing matches these filters.</p>
% else:
<p class="empty">Nothing recorded yet.</p>
% end
% if newer or older:
<nav class="pager" aria-label="Audit log pages">
% if newer:
<a href="{{newer}}" rel="prev">&larr; Newer</a>
% end
% if older:
<a href="{{older}}" rel="next">Older &rarr;</a>
% end
</nav>
% end
