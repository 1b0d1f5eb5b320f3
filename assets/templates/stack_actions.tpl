% if get('server_blocked'):
<fieldset class="server-blocked" disabled title="{{server_blocked}}">
% end
% may_restart, may_update = can('POST', base + '/restart'), can('POST', base + '/update')
% if may_restart or may_update:
<form class="actions" method="post" action="{{base}}/{{'restart' if may_restart else 'update'}}"><input type="hidden" name="csrf_token" value="{{csrf_token}}"><input type="hidden" name="return_to" value="{{return_to}}">
% if may_restart:
<button type="submit" hx-post="{{base}}/restart" hx-confirm="Restart stack {{stack}}? All its containers restart, the database included; sites are briefly down.">Restart</button>
% end
% if may_update:
<button type="submit" class="warn" formaction="{{base}}/update" hx-post="{{base}}/update" hx-confirm="Update stack {{stack}}? It pulls new images and restarts it; sites are briefly down.">Update</button>
% end
</form>
% end
% if get('server_blocked'):
<span class="muted blocked-reason">{{server_blocked}}</span></fieldset>
% end
