<div class="page-head">
<h1>Restore a backup of {{site}} <span class="muted">on <a href="/stack/{{qstack}}">{{stack}}</a></span></h1>
<a href="/backups/{{qstack}}/{{qsite}}">Back to the backups</a>
</div>
<section class="card restore-summary" id="restore-summary" data-refresh>
<h2>What will happen</h2>
% if backup:
<dl class="facts">
<dt>Backup</dt><dd data-fact="backup">{{backup['id']}} of {{site}} on {{stack}}, made {{backup['created']}} <span class="muted">{{backup['age']}}</span></dd>
% if get('offsite'):
<dt>Source</dt><dd data-fact="source">the offsite copy (restic): fetched into a private staging dir and checked file by file against its manifest first</dd>
% end
<dt>Size</dt><dd data-fact="size">{{backup['size']}}{{' (encrypted)' if backup['encrypted'] else ''}}</dd>
% if backup['label']:
<dt>Label</dt><dd data-fact="label"><span class="badge badge-unknown">{{backup['label']}}</span></dd>
% end
<dt>Apps</dt><dd data-fact="apps">
% if backup['apps']:
{{', '.join(backup['apps'])}} <span class="muted">(the target bench must have all of them)</span>
% elif backup['apps_known']:
none recorded
% else:
<span class="muted">not recorded in this (older) backup: the apps are not checked before restoring</span>
% end
</dd>
<dt>Target</dt><dd data-fact="target">{{form['values'].get('target_site')}} on {{form['values'].get('target_stack')}}{{' (this site)' if (form['values'].get('target_stack'), form['values'].get('target_site')) == (stack, site) else ''}}: choose below</dd>
</dl>
% end
<ol class="steps">
<li>Before anything changes, the backup's files are checked against its manifest, and the target bench must have every app the backup's site had; the database must be up. Any problem stops the restore with nothing changed.</li>
<li>A verified <strong>safety backup</strong> of the target site is taken first (labelled <em>pre-restore</em>; not for a new site).</li>
<li>The target site goes into maintenance mode; its database and files are <strong>replaced</strong> by the backup's, then it is migrated and maintenance ends.</li>
<li>If that fails, the site is rolled back to the safety backup automatically, and the job says so.</li>
</ol>
</section>
{{!partial('restore_form', csrf_token=csrf_token, errors=errors, **form)}}
