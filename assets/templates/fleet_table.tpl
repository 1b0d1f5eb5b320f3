% if servers:
<table class="table fleet">
<thead><tr><th>Server</th><th>State</th><th>Stacks running</th><th>Oldest last backup</th><th>Failed jobs 24 h</th><th>Agent</th><th>Clock skew</th><th>Last seen</th></tr></thead>
<tbody>
% for s in servers:
<tr class="state-{{s['state']}}"><td>{{s['name']}}</td><td>{{s['state']}}{{' (' + s['problem'] + ')' if s['problem'] else ''}}</td><td>{{'' if s['stacks_total'] is None else '%s / %s' % (s['stacks_running'], s['stacks_total'])}}</td><td>{{'' if s['worst_backup_age_seconds'] is None else '%d h' % (s['worst_backup_age_seconds'] // 3600)}}</td><td>{{'' if s['failed_jobs_24h'] is None else s['failed_jobs_24h']}}</td><td>{{s['agent_version'] or ''}}</td><td>{{'' if s['clock_skew_seconds'] is None else '%+.0f s' % s['clock_skew_seconds']}}{{' (' + s['clock_warning'] + ')' if s.get('clock_warning') else ''}}</td><td>{{s['last_seen'] or ''}}{{' (as of ' + s['figures_as_of'] + ')' if s['state'] != 'online' and s['figures_as_of'] else ''}}</td></tr>
% end
</tbody>
</table>
% else:
<p class="empty">No servers yet: add one with fm-dashboard fleet token create --name NAME.</p>
% end
