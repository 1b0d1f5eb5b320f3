<div class="page-head">
<h1>Import {{name}}</h1>
<a href="/imports">Back to the imports</a>
</div>
<section class="card restore-summary">
<h2>What will happen</h2>
% if item:
<ul class="files">
% for f in item['files']:
<li>{{f['name']}} <span class="muted">{{f['size']}}</span></li>
% end
</ul>
% if item['problems']:
<ul class="problems">
% for p in item['problems']:
<li class="field-error">{{p}}</li>
% end
</ul>
% end
% end
<ol class="steps">
<li>The files in {{import_dir}} are verified exactly like a fresh backup (a complete dump, readable tars). A bad or partial set is refused with the reason and left where it is.</li>
<li>They are published as a backup of the site you choose, labelled <em>imported</em>. Nothing on the site changes yet.</li>
<li>Then restore it from that site's backups page, like any other backup.</li>
</ol>
</section>
{{!partial('restore_form', csrf_token=csrf_token, errors=errors, **form)}}
