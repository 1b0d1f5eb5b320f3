% # The job's panel says what was started; a sentence only when there is no job or it is not a new one.
% if not job or not success or get('duplicate'):
{{!partial('notice', kind='ok' if success else 'error', text=message)}}
% end
% if job:
{{!partial('job_panel', job=job, poll_seconds=1, warning='')}}
% end
