% # The buttons of a stack or a site (dashboard/views.py:action_buttons, from fmappliance/actions_table.py).
% # One form: without JavaScript it posts to the first button's URL, the others name theirs (formaction).
% if get('server_blocked'):
<fieldset class="server-blocked" disabled title="{{server_blocked}}">
% end
% if buttons:
<form class="actions" method="post" action="{{buttons[0]['url']}}"><input type="hidden" name="csrf_token" value="{{csrf_token}}"><input type="hidden" name="return_to" value="{{return_to}}">
% for i, b in enumerate(buttons):
<button type="submit"\\
% if b['style']:
 class="{{b['style']}}"\\
% end
% if i:
 formaction="{{b['url']}}"\\
% end
 hx-post="{{b['url']}}"\\
% if b['confirm']:
 hx-confirm="{{b['confirm']}}"\\
% end
% if b['title']:
 title="{{b['title']}}"\\
% end
>{{b['label']}}</button>
% end
</form>
% elif get('view_only'):
<span class="muted">view only</span>
% end
% if get('server_blocked'):
<span class="muted blocked-reason">{{server_blocked}}</span></fieldset>
% end
