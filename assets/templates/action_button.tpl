% if get('server_blocked'):
<fieldset class="server-blocked" disabled title="{{server_blocked}}">
% end
<form class="actions" method="post" action="{{url}}" hx-post="{{url}}"><input type="hidden" name="csrf_token" value="{{csrf_token}}"><input type="hidden" name="return_to" value="{{return_to}}"><button type="submit" class="{{cls}}">{{label}}</button></form>
% if get('server_blocked'):
<span class="muted blocked-reason">{{server_blocked}}</span></fieldset>
% end
