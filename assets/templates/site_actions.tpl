% if get('server_blocked'):
<fieldset class="server-blocked" disabled title="{{server_blocked}}">
% end
% if can('POST', base + '/backup'):
<form class="actions" method="post" action="{{base}}/backup" hx-post="{{base}}/backup"><input type="hidden" name="csrf_token" value="{{csrf_token}}"><input type="hidden" name="return_to" value="{{return_to}}"><button type="submit" class="primary">Backup now</button><button type="submit" formaction="{{base}}/restart" hx-post="{{base}}/restart" hx-confirm="Restart site {{site}}? Its services restart; the site is briefly down.">Restart</button><button type="submit" formaction="{{base}}/test-restore" hx-post="{{base}}/test-restore" title="Restore the newest verified backup into a throwaway site and check it; the live site is not touched">Test restore</button><button type="submit" class="warn" formaction="{{base}}/migrate" hx-post="{{base}}/migrate" hx-confirm="Migrate site {{site}}? It runs bench migrate.">Migrate</button></form>
% else:
<span class="muted">view only</span>
% end
% if get('server_blocked'):
<span class="muted blocked-reason">{{server_blocked}}</span></fieldset>
% end
