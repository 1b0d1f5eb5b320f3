<div class="page-head">
<h1>Stacks</h1>
% if disk:
<p class="disk {{'disk-low' if disk['low'] else ''}}">Free space for backups in <code>{{disk['path']}}</code>: <strong>{{disk['free']}}</strong> of {{disk['total']}}</p>
% end
</div>
% if alerts:
<section class="alerts" aria-label="Overdue backups">
% for a in alerts:
<div class="notice notice-error overdue" role="alert" data-stack="{{a['stack']}}" data-site="{{a['site']}}">{{a['message']}} <a href="{{a['href']}}">Backups</a> &middot; <a href="/scheduler">Schedules</a></div>
% end
</section>
% end
% if unscheduled:
<section class="alerts" aria-label="Sites without a backup schedule">
% for w in unscheduled:
<div class="notice notice-warn unscheduled" role="status" data-stack="{{w['stack']}}" data-sites="{{' '.join(w['sites'])}}">{{w['message']}} <a href="/scheduler">Add a schedule</a></div>
% end
</section>
% end
<section class="card host" id="host-panel" aria-label="Host" hx-get="/dashboard/host" hx-trigger="load" hx-target="this" hx-swap="innerHTML">
<h2>Host</h2>
<p class="muted">Reading the host's figures…</p>
</section>
{{!stacks_html}}
