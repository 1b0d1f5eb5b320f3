% if schedules:
<div class="card">
<table class="table schedules">
<thead><tr><th>Kind</th><th>Site</th><th>When</th><th>Next runs</th><th>Last run</th><th>Status</th><th>Source</th><th>Actions</th></tr></thead>
<tbody>
% for s in schedules:
<tr data-schedule-id="{{s['id']}}" data-status="{{s['status']}}" data-source="{{s['source']}}" data-kind="{{s['kind']}}">
<td><span class="badge {{'badge-warn' if s['kind'] == 'test_restore' else 'badge-unknown'}} schedule-kind">{{s['kind_label']}}</span></td>
<td><strong>{{s['site']}}</strong> <span class="muted">on</span> {{s['stack']}}</td>
<td>{{s['when']}}<br><span class="muted">{{s['timezone']}}</span></td>
<td>
% if s['next_runs']:
<ul class="runs">
% for t in s['next_runs']:
<li>{{t}}</li>
% end
</ul>
% else:
<span class="muted">none ({{s['status']}})</span>
% end
% if s['next_due']:
<div class="muted next-due">agent: next due {{s['next_due']}}</div>
% end
</td>
<td>
% if s['last_runs']:
% for r in s['last_runs']:
<div class="last-run">{{r['time']}} <span class="badge {{r['badge']}}">{{r['result']}}</span>
% if s['site'] == 'every site' and r['site'] != '*':
<span class="muted">{{r['site']}}</span>
% end
% if r['catch_up']:
<span class="muted">(catch-up)</span>
% end
% if r['job_id']:
<a href="/jobs/{{r['qjob_id']}}">job {{r['job_id']}}</a>
% end
% if r['message'] and r['result'] not in ('succeeded', 'handed to the agent', 'running'):
<div class="muted run-message">{{r['message']}}</div>
% end
</div>
% end
% else:
<span class="muted">not run yet</span>
% end
% if s['lateness']:
<div class="muted lateness">{{s['lateness']}}{{'; %d missed' % s['missed_total'] if s['missed_total'] else ''}}</div>
% end
</td>
<td><span class="badge {{s['badge']}}">{{s['status']}}</span>
% if s['reason']:
<div class="run-message age-stale">{{s['reason']}}</div>
% end
</td>
<td>
% if s['source'] == 'config':
config.yaml
% else:
added by {{s['created_by']}}
% end
</td>
<td>
% if s['removable'] and can('POST', '/scheduler/remove/' + s['qid']):
<form class="actions" method="post" action="/scheduler/{{'disable' if s['enabled'] else 'enable'}}/{{s['qid']}}" hx-post="/scheduler/{{'disable' if s['enabled'] else 'enable'}}/{{s['qid']}}" hx-target="#scheduler-body" hx-swap="outerHTML"><input type="hidden" name="csrf_token" value="{{csrf_token}}"><button type="submit">{{'Disable' if s['enabled'] else 'Enable'}}</button><button type="submit" class="warn" formaction="/scheduler/remove/{{s['qid']}}" hx-post="/scheduler/remove/{{s['qid']}}" hx-confirm="Remove the schedule for {{s['site']}} on {{s['stack']}} ({{s['when']}})? Its run history goes too.">Remove</button></form>
% elif not s['removable']:
<span class="muted">change it in config.yaml</span>
% end
</td>
</tr>
% end
</tbody>
</table>
</div>
% else:
<p class="empty">No backup schedules yet: add one below, or declare them under schedules: in /etc/fmappliance/config.yaml.</p>
% end
