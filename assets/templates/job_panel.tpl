<div class="job-panel" id="job-{{job['id']}}" hx-target="this" data-status="{{job['status']}}" data-job-id="{{job['id']}}" data-action="{{job['raw_action']}}" data-stack="{{job['stack']}}" data-site="{{job['site']}}"
% if not job['final']:
 hx-get="/jobs/{{job['id']}}" hx-trigger="every {{poll_seconds}}s" hx-swap="outerHTML"
% end
>
<div class="job-head"><strong>{{job['action']}}</strong> <span class="muted">{{job['target']}}</span> <span class="badge {{job['badge']}}">{{job['status']}}</span>
% if job['duration']:
<span class="muted">{{job['duration']}}</span>
% end
<a class="muted" href="/jobs/{{job['id']}}">job {{job['id']}}</a></div>
% if warning:
<div class="notice notice-error" role="alert">{{warning}}</div>
% end
% if job['final']:
<div class="notice notice-{{'ok' if job['ok'] else 'error'}}" role="{{'status' if job['ok'] else 'alert'}}">{{job['message'] or ('Finished.' if job['ok'] else 'Failed.')}}</div>
% elif job['message']:
<p class="job-message">{{job['message']}}</p>
% end
% if job['output']:
<pre class="job-output">{{job['output']}}</pre>
% end
</div>
