<div class="page-head">
<h1>Imports</h1>
</div>
<p class="muted">Copy a backup made elsewhere (the <code>…-database.sql.gz</code> dump, and optionally the files and private files tars and the site config, named as bench names them) into <code>{{import_dir}}</code> on this server. Import it here as a backup of one of your sites: it is verified like a fresh backup, published with the label <em>imported</em>, and then restores like any other.</p>
<section class="card">
% if imports:
<table class="table imports">
<thead><tr><th>Set</th><th>Files</th><th>Check</th><th></th></tr></thead>
<tbody>
% for i in imports:
<tr data-import="{{i['name']}}">
<td>{{i['name']}} <span class="muted">{{i['size']}}</span></td>
<td><ul class="files">
% for f in i['files']:
<li>{{f['name']}} <span class="muted">{{f['size']}}</span></li>
% end
</ul></td>
<td>
% if i['problems']:
<ul class="problems">
% for p in i['problems']:
<li class="field-error">{{p}}</li>
% end
</ul>
% else:
<span class="verified">ready</span>
% end
</td>
<td>
% if not i['problems']:
<a href="/imports/{{i['qname']}}">Import…</a>
% end
</td>
</tr>
% end
</tbody>
</table>
% elif not banner:
<p class="empty">Nothing is waiting in {{import_dir}}.</p>
% end
</section>
