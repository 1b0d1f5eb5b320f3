<h2>Host</h2>
% if problem:
<div class="notice notice-error" role="alert">{{problem}}</div>
% end
% if host:
<dl class="host-figures">
<dt>Load average <span class="muted">(1, 5, 15 min)</span></dt>
% if host['load']:
<dd class="host-load" data-load="{{' '.join(host['load'])}}">{{' · '.join(host['load'])}}{{' on %d CPUs' % host['cpu_count'] if host['cpu_count'] else ''}}</dd>
% else:
<dd class="muted">unknown</dd>
% end
<dt>Memory used</dt>
% if host['memory']:
<dd class="host-memory" data-bytes="{{host['memory']['used_bytes']}}">{{host['memory']['used']}} of {{host['memory']['total']}} ({{host['memory']['percent']}} %)</dd>
% else:
<dd class="muted">unknown</dd>
% end
% for d in host['disks']:
<dt>Free for {{d['label']}}</dt>
% if d['free']:
<dd class="host-disk {{'disk-low' if d['low'] else ''}}" data-disk="{{d['name']}}" data-bytes="{{d['free_bytes']}}"><strong>{{d['free']}}</strong> of {{d['total']}} <code>{{d['path']}}</code></dd>
% else:
<dd class="host-disk muted" data-disk="{{d['name']}}">unknown{{': ' + d['reason'] if d['reason'] else ''}}</dd>
% end
% end
</dl>
% if host['stacks']:
<table class="table host-stacks">
<thead><tr><th>Stack</th><th>CPU <span class="muted">(% of one core)</span></th><th>Memory</th><th>Containers</th></tr></thead>
<tbody>
% for s in host['stacks']:
<tr data-stack="{{s['name']}}"><td data-label="Stack">{{s['name']}}</td><td class="host-cpu" data-label="CPU (% of one core)" data-cpu="{{'' if s['cpu_percent'] is None else s['cpu_percent']}}">{{s['cpu']}}</td><td class="host-stack-memory" data-bytes="{{'' if s['memory_bytes'] is None else s['memory_bytes']}}" data-label="Memory">{{s['memory']}}</td><td data-label="Containers">{{s['containers']}}</td></tr>
% end
</tbody>
</table>
<p class="muted host-cpu-note">CPU as <code>docker stats</code> reports it, summed over the stack's containers: 100 % is one core fully busy{{', so at most %d %% on this host\'s %d CPUs' % (host['cpu_count'] * 100, host['cpu_count']) if host['cpu_count'] else ''}}.</p>
% end
% if host['stats_reason']:
<p class="muted">Container figures unavailable: {{host['stats_reason']}}</p>
% end
% end
