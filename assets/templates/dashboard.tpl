<div class="page-head">
<h1>Stacks</h1>
% if disk:
<p class="disk {{'disk-low' if disk['low'] else ''}}">Free space for backups in <code>{{disk['path']}}</code>: <strong>{{disk['free']}}</strong> of {{disk['total']}}</p>
% end
</div>
{{!stacks_html}}
