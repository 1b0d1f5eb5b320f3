<form id="{{form_id}}" class="card restore-form" method="post" action="{{url}}" hx-post="{{url}}" hx-target="this" hx-swap="outerHTML" data-swap-errors novalidate>
<h2>{{heading}}</h2>
<input type="hidden" name="csrf_token" value="{{csrf_token}}">
% if errors.get('_form'):
<div class="notice notice-error" role="alert" data-field="_form">{{errors['_form']}}</div>
% end
<div class="form-grid">
<div class="field{{' field-invalid' if 'target_stack' in errors else ''}}">
<label for="{{form_id}}-stack">Target stack</label>
% if stacks:
<select id="{{form_id}}-stack" name="target_stack">
% for s in stacks:
<option value="{{s['name']}}"{{!' selected' if values.get('target_stack') == s['name'] else ''}}>{{s['name']}} ({{'Frappe Manager bench' if s['type'] == 'fm' else s['type']}})</option>
% end
</select>
% else:
<input id="{{form_id}}-stack" name="target_stack" value="{{values.get('target_stack', '')}}" autocomplete="off">
% end
% if 'target_stack' in errors:
<p class="field-error" data-field="target_stack">{{errors['target_stack']}}</p>
% end
</div>
<div class="field{{' field-invalid' if 'target_site' in errors else ''}}">
<label for="{{form_id}}-site">Target site</label>
<input id="{{form_id}}-site" name="target_site" value="{{values.get('target_site', '')}}" list="{{form_id}}-sites" autocomplete="off" spellcheck="false">
<datalist id="{{form_id}}-sites">
% for s in stacks:
% for site in s['sites']:
<option value="{{site}}">{{s['name']}}</option>
% end
% end
</datalist>
% if 'target_site' in errors:
<p class="field-error" data-field="target_site">{{errors['target_site']}}</p>
% end
</div>
% if allow_create:
<div class="field field-check{{' field-invalid' if 'create_site' in errors else ''}}">
<label for="{{form_id}}-create"><input type="checkbox" id="{{form_id}}-create" name="create_site" value="1"{{!' checked' if values.get('create_site') in ('1', 'on', 'true') else ''}}> <span>New site: create it first <span class="muted">(compose stacks only)</span></span></label>
% if 'create_site' in errors:
<p class="field-error" data-field="create_site">{{errors['create_site']}}</p>
% end
</div>
% end
</div>
<div class="field confirm-field{{' field-invalid' if 'confirm' in errors else ''}}">
<label for="{{form_id}}-confirm">Type the target site's name to confirm</label>
<input id="{{form_id}}-confirm" name="confirm" value="" autocomplete="off" spellcheck="false">
% if 'confirm' in errors:
<p class="field-error" data-field="confirm">{{errors['confirm']}}</p>
% end
</div>
<button type="submit" class="{{get('button_class', 'primary')}}">{{button}}</button>
</form>
