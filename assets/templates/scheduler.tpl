<div id="scheduler-body">
<div class="page-head">
<h1>Backup schedules</h1>
<p class="muted">Times are shown in each schedule's own time zone.</p>
</div>
% if notice:
{{!partial('notice', kind=notice[0], text=notice[1])}}
% end
<p class="schedule-sync" data-state="{{'applied' if applied['state'] == 'applied' else 'pending'}}">The agent runs these schedules.
% if applied['state'] == 'applied':
Version {{applied['version']}}: <span class="badge badge-ok">applied</span>
% else:
<span class="badge badge-warn">{{applied['state']}}</span>
% end
</p>
% if agent_down:
<div class="notice notice-error" role="alert">The agent cannot be asked for its stacks and sites right now; the names you enter are checked when the schedule runs.</div>
% end
{{!partial('scheduler_table', schedules=schedules, csrf_token=csrf_token)}}
% if can('POST', '/scheduler/add'):
{{!partial('scheduler_form', values=values, errors=errors, stack_names=stack_names, site_names=site_names, weekdays=weekdays, default_tz=default_tz, csrf_token=csrf_token)}}
% end
</div>
