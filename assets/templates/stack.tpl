% if stack:
<div class="page-head">
<h1 id="stack-title" data-refresh>{{stack['name']}} <span class="badge {{stack['badge']}}">{{stack['status']}}</span>{{!' <span class="badge badge-warn" data-needs-migration>needs fm migrate</span>' if stack['needs_migration'] else ''}}</h1>
<p class="muted">{{stack['type']}} &middot; <code>{{stack['path']}}</code> &middot; checked {{stack['checked']}}</p>
{{!partial('action_buttons', buttons=stack['buttons'], csrf_token=csrf_token, return_to=return_to)}}
</div>
% if stack['reason']:
<div class="notice notice-error">{{stack['reason']}}</div>
% end
<section class="card" id="stack-services" data-refresh>
% show_logs = can('GET', '/stack/' + stack['qname'] + '/logs')
% if show_logs:
<h2>Services <a class="small" href="/stack/{{stack['qname']}}/logs">live logs</a></h2>
% else:
<h2>Services</h2>
% end
% if stack['services']:
<table class="table">
<thead><tr><th>Service</th><th>Container</th><th>State</th><th>Status</th></tr></thead>
<tbody>
% for svc in stack['services']:
% if show_logs:
<tr><td><a href="/stack/{{stack['qname']}}/logs?service={{svc['qservice']}}" title="Live log of {{svc['service']}}">{{svc['service']}}</a></td>
% else:
<tr><td>{{svc['service']}}</td>
% end
<td>{{svc['name']}}</td><td><span class="badge {{svc['badge']}}">{{svc['state']}}</span>{{' (' + svc['health'] + ')' if svc['health'] else ''}}</td><td>{{svc['status']}}</td></tr>
% end
</tbody>
</table>
% else:
<p class="empty">No containers found for this stack.</p>
% end
</section>
<section class="card" id="stack-sites" data-refresh>
<h2>Sites</h2>
% if stack['sites']:
<table class="table sites">
<thead><tr><th>Site</th><th>Last good backup</th><th>Actions</th></tr></thead>
<tbody>
% for site in stack['sites']:
<tr data-site="{{site['name']}}">
<td><a href="/backups/{{stack['qname']}}/{{site['qname']}}">{{site['name']}}</a></td>
<td class="{{site['age_class']}}">{{site['last_backup_age']}} <span class="muted">{{site['last_backup_size']}}</span> <span class="badge {{site['proof_class']}}" title="{{site['proof_title']}}">{{site['proof_text']}}</span>
% if site.get('offsite'):
<span class="badge {{'badge-warn' if site['offsite']['warn'] else 'badge-ok'}}" data-offsite="{{site['name']}}">{{site['offsite']['text']}}</span>
% end
</td>
<td>{{!partial('action_buttons', buttons=site['buttons'], view_only=True, csrf_token=csrf_token, return_to=return_to)}}</td>
</tr>
% end
</tbody>
</table>
% else:
<p class="empty">No sites found in this stack.</p>
% end
</section>
% else:
<h1>{{name}}</h1>
% end
<section class="card" id="stack-jobs" data-refresh>
<h2>Recent jobs</h2>
% if jobs:
<table class="table jobs">
<thead><tr><th>Started</th><th>Action</th><th>Target</th><th>Outcome</th><th>Duration</th></tr></thead>
<tbody>
% for job in jobs:
<tr data-job-id="{{job['id']}}"><td><a href="/jobs/{{job['id']}}">{{job['created']}}</a></td><td>{{job['action']}}</td><td>{{job['target']}}</td><td><span class="badge {{job['badge']}}">{{job['status']}}</span> {{job['message']}}</td><td>{{job['duration']}}</td></tr>
% end
</tbody>
</table>
% else:
<p class="empty">No jobs yet.</p>
% end
</section>
