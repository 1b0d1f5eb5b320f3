<div class="page-head">
<h1>Backups of {{site}} <span class="muted">on <a href="/stack/{{qstack}}">{{stack}}</a></span></h1>
<div class="actions">
% if can('POST', '/site/' + qstack + '/' + qsite + '/backup'):
{{!partial('action_button', url='/site/' + qstack + '/' + qsite + '/backup', label='Backup now', cls='primary', confirm='', csrf_token=csrf_token, return_to=return_to)}}
% end
</div>
</div>
<div id="backup-chart" data-refresh>
% if chart:
<section class="card">
<h2>Size over time <span class="muted">({{chart['count']}} backups)</span></h2>
<svg class="chart" viewBox="0 0 {{chart['width']}} {{chart['height']}}" role="img" aria-label="Backup size over time, from {{chart['first_label']}} to {{chart['last_label']}}, at most {{chart['max_label']}}">
% for t in chart['ticks']:
<line class="chart-grid" x1="{{chart['left']}}" y1="{{t['y']}}" x2="{{chart['right']}}" y2="{{t['y']}}"></line>
<text class="chart-tick" x="{{chart['left'] - 6}}" y="{{t['y']}}" text-anchor="end" dominant-baseline="middle">{{t['label']}}</text>
% end
<polyline class="chart-line" points="{{chart['points']}}"></polyline>
% for d in chart['dots']:
<circle class="chart-point" cx="{{d['x']}}" cy="{{d['y']}}" r="3.5"><title>{{d['title']}}</title></circle>
% end
<text class="chart-tick" x="{{chart['left']}}" y="{{chart['height'] - 4}}" text-anchor="start">{{chart['first_label']}}</text>
<text class="chart-tick" x="{{chart['right']}}" y="{{chart['height'] - 4}}" text-anchor="end">{{chart['last_label']}}</text>
</svg>
</section>
% end
</div>
<section class="card" id="backup-list" data-refresh>
% if backups:
<table class="table backups">
<thead><tr><th>Created</th><th>Size</th><th>Verified</th><th>Files</th><th></th></tr></thead>
<tbody>
% for b in backups:
<tr data-backup-id="{{b['id']}}">
<td>{{b['created']}} <span class="muted">{{b['age']}}</span>
% if b['label']:
<span class="badge badge-unknown backup-label" data-label="{{b['label']}}">{{b['label']}}</span>
% end
</td>
<td>{{b['size']}}</td>
<td>{{!'<span class="verified" title="verified">&#10003; verified</span>' if b['verified'] else '<span class="unverified">not verified</span>'}}</td>
<td><ul class="files">
% for f in b['files']:
% if can('GET', '/download/' + qstack + '/' + qsite + '/' + f['qname']):
<li><a href="/download/{{qstack}}/{{qsite}}/{{f['qname']}}" download>{{f['name']}}</a> <span class="muted">{{f['part']}}, {{f['size']}}</span></li>
% else:
<li>{{f['name']}} <span class="muted">{{f['part']}}, {{f['size']}}</span></li>
% end
% end
</ul></td>
<td>
% if b['verified'] and can('GET', '/restore/' + qstack + '/' + qsite + '/' + b['qid']):
<a class="restore-link" href="/restore/{{qstack}}/{{qsite}}/{{b['qid']}}">Restore…</a>
% end
</td>
</tr>
% end
</tbody>
</table>
% elif not failed:
<p class="empty">No backups of this site yet. Use "Backup now" to make one.</p>
% end
</section>
% if get('offsite'):
<section class="card offsite">
<h2>Offsite <span class="badge {{'badge-warn' if offsite['warn'] else 'badge-ok'}}" data-offsite-badge>{{offsite['badge']}}</span></h2>
% if offsite.get('copy_message'):
<p class="banner warning">{{offsite['copy_message']}}</p>
% end
% if offsite['check']:
<p class="offsite-check" data-check-status="{{offsite['check']['status']}}">Last check: {{offsite['check']['status']}} {{offsite['check']['finished'] or ''}}: {{offsite['check']['message'] or ''}}</p>
% else:
<p class="offsite-check muted">The repository has not been checked yet.</p>
% end
% if offsite['snapshots']:
<table class="table offsite-snapshots">
<thead><tr><th>Backup</th><th>Size</th><th>Files</th><th></th></tr></thead>
<tbody>
% for b in offsite['snapshots']:
<tr data-offsite-backup="{{b['id']}}">
<td>{{b['created']}} <span class="muted">{{b['age']}}</span></td>
<td>{{b['size']}}</td>
<td><ul class="files">
% for f in b['files']:
<li>{{f['name']}} <span class="muted">{{f['size']}}</span></li>
% end
</ul></td>
<td>
% if can('GET', '/restore/' + qstack + '/' + qsite + '/' + b['qid']):
<a class="restore-link" href="/restore/{{qstack}}/{{qsite}}/{{b['qid']}}?source=offsite">Restore…</a>
% end
</td>
</tr>
% end
</tbody>
</table>
% else:
<p class="empty">No offsite copies of this site yet.</p>
% end
</section>
% end
