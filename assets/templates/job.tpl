<h1>Job {{job['id']}}</h1>
{{!partial('job_panel', job=job, poll_seconds=1, warning=warning)}}
<p><a href="/dashboard">Back to the dashboard</a></p>
