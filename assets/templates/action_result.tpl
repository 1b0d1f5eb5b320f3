{{!partial('notice', kind='ok' if success else 'error', text=message)}}
% if job:
{{!partial('job_panel', job=job, poll_seconds=1, warning='')}}
% end
