<form class="action" method="post" action="{{url}}" hx-post="{{url}}" hx-target="#action-results" hx-swap="afterbegin"
% if confirm:
 hx-confirm="{{confirm}}"
% end
><input type="hidden" name="csrf_token" value="{{csrf_token}}"><input type="hidden" name="return_to" value="{{return_to}}"><button type="submit" class="{{cls}}">{{label}}</button></form>
