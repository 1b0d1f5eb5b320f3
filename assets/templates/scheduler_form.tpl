<form id="schedule-form" class="card schedule-form" method="post" action="/scheduler/add" hx-post="/scheduler/add" hx-target="#scheduler-body" hx-swap="outerHTML" data-swap-errors novalidate>
<h2>Add a schedule</h2>
<input type="hidden" name="csrf_token" value="{{csrf_token}}">
<div class="form-grid">
<div class="field{{' field-invalid' if 'kind' in errors else ''}}">
<label for="sched-kind">Kind</label>
<select id="sched-kind" name="kind">
% for option, label in (('backup', 'Backup'), ('test_restore', 'Test restore (into a throwaway site)')):
<option value="{{option}}"{{!' selected' if values.get('kind', 'backup') == option else ''}}>{{label}}</option>
% end
</select>
% if 'kind' in errors:
<p class="field-error" data-field="kind">{{errors['kind']}}</p>
% end
</div>
<div class="field{{' field-invalid' if 'stack' in errors else ''}}">
<label for="sched-stack">Stack</label>
% if stack_names:
<select id="sched-stack" name="stack">
<option value="">Choose a stack</option>
% for name in stack_names:
<option value="{{name}}"{{!' selected' if values.get('stack') == name else ''}}>{{name}}</option>
% end
</select>
% else:
<input id="sched-stack" name="stack" value="{{values.get('stack', '')}}" autocomplete="off">
% end
% if 'stack' in errors:
<p class="field-error" data-field="stack">{{errors['stack']}}</p>
% end
</div>
<div class="field{{' field-invalid' if 'site' in errors else ''}}">
<label for="sched-site">Site <span class="muted">(* = every site of the stack)</span></label>
<input id="sched-site" name="site" value="{{values.get('site', '')}}" list="sched-sites" placeholder="*" autocomplete="off">
<datalist id="sched-sites"><option value="*">every site</option>
% for name in site_names:
<option value="{{name}}"></option>
% end
</datalist>
% if 'site' in errors:
<p class="field-error" data-field="site">{{errors['site']}}</p>
% end
</div>
<div class="field{{' field-invalid' if 'frequency' in errors else ''}}">
<label for="sched-frequency">Frequency</label>
<select id="sched-frequency" name="frequency">
% for option in ('daily', 'weekly', 'monthly'):
<option value="{{option}}"{{!' selected' if values.get('frequency') == option else ''}}>{{option}}</option>
% end
</select>
% if 'frequency' in errors:
<p class="field-error" data-field="frequency">{{errors['frequency']}}</p>
% end
</div>
<div class="field{{' field-invalid' if 'time' in errors else ''}}">
<label for="sched-time">Time <span class="muted">(HH:MM, 24 h)</span></label>
<input id="sched-time" name="time" value="{{values.get('time', '')}}" placeholder="02:00" inputmode="numeric" autocomplete="off">
% if 'time' in errors:
<p class="field-error" data-field="time">{{errors['time']}}</p>
% end
</div>
<div class="field{{' field-invalid' if 'day_of_week' in errors else ''}}">
<label for="sched-dow">Day of week <span class="muted">(weekly)</span></label>
<select id="sched-dow" name="day_of_week">
% for key, label in weekdays:
<option value="{{key}}"{{!' selected' if values.get('day_of_week') == key else ''}}>{{label}}</option>
% end
</select>
% if 'day_of_week' in errors:
<p class="field-error" data-field="day_of_week">{{errors['day_of_week']}}</p>
% end
</div>
<div class="field{{' field-invalid' if 'day_of_month' in errors else ''}}">
<label for="sched-dom">Day of month <span class="muted">(monthly, 1-28)</span></label>
<input id="sched-dom" name="day_of_month" value="{{values.get('day_of_month', '')}}" inputmode="numeric" autocomplete="off">
% if 'day_of_month' in errors:
<p class="field-error" data-field="day_of_month">{{errors['day_of_month']}}</p>
% end
</div>
<div class="field{{' field-invalid' if 'timezone' in errors else ''}}">
<label for="sched-tz">Time zone <span class="muted">(IANA name; empty = {{default_tz}})</span></label>
<input id="sched-tz" name="timezone" value="{{values.get('timezone', '')}}" placeholder="{{default_tz}}" autocomplete="off">
% if 'timezone' in errors:
<p class="field-error" data-field="timezone">{{errors['timezone']}}</p>
% end
</div>
</div>
<button type="submit" class="primary">Add schedule</button>
</form>
