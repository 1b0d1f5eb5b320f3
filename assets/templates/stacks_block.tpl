% if not stacks and not failed:
<p class="empty">No stacks configured: add them to /etc/fmappliance/config.yaml</p>
% end
% for s in stacks:
<section class="card stack" id="stack-{{s['name']}}" data-refresh data-stack="{{s['name']}}" data-status="{{s['status']}}">
<div class="stack-head">
<h2><a href="/stack/{{s['qname']}}">{{s['name']}}</a></h2>
<span class="badge {{s['badge']}}">{{s['status']}}</span>
<span class="muted">{{s['type']}}</span>
% if s['needs_migration']:
<span class="badge badge-warn" data-needs-migration="{{s['name']}}" title="run fm migrate on the server">needs fm migrate</span>
% end
{{!partial('action_buttons', buttons=s['buttons'], csrf_token=csrf_token, return_to=return_to)}}
</div>
% if s['reason']:
<div class="notice notice-error">{{s['reason']}}</div>
% end
<details class="services"><summary>Services ({{len(s['services'])}})</summary>
<table class="table">
<thead><tr><th>Service</th><th>Container</th><th>State</th><th>Status</th></tr></thead>
<tbody>
% for svc in s['services']:
<tr><td>{{svc['service']}}</td><td>{{svc['name']}}</td><td><span class="badge {{svc['badge']}}">{{svc['state']}}</span>{{' (' + svc['health'] + ')' if svc['health'] else ''}}</td><td>{{svc['status']}}</td></tr>
% end
</tbody>
</table>
</details>
% if s['sites']:
<table class="table sites">
<thead><tr><th>Site</th><th>Last good backup</th><th>Actions</th></tr></thead>
<tbody>
% for site in s['sites']:
<tr data-site="{{site['name']}}">
<td><a href="/backups/{{s['qname']}}/{{site['qname']}}">{{site['name']}}</a></td>
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
% end
