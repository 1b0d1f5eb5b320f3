<div class="page-head">
<h1>Logs of {{name}}</h1>
<p class="muted"><a href="/stack/{{qname}}">&larr; back to {{name}}</a></p>
</div>
<section class="card log-viewer" id="log-viewer" data-stream="/stack/{{qname}}/logs/stream">
<form class="log-controls" id="log-controls">
<label for="log-service">Service</label>
<select id="log-service" name="service">
% for service in services:
<option value="{{service}}"{{!' selected' if service == selected else ''}}>{{service}}</option>
% end
</select>
<label for="log-tail">Last</label>
<select id="log-tail" name="tail">
% for n in (100, 200, 1000, 5000):
<option value="{{n}}"{{!' selected' if n == 200 else ''}}>{{n}} lines</option>
% end
</select>
<button type="button" id="log-pause" aria-pressed="false">Pause</button>
<label class="inline-check"><input type="checkbox" id="log-follow" checked> Follow (scroll to new lines)</label>
<button type="button" id="log-download">Download these lines</button>
</form>
<p class="muted log-status" id="log-status" role="status" aria-live="polite">Pick a service.</p>
<pre class="log-lines" id="log-lines" tabindex="0" aria-label="Log lines"></pre>
</section>
<script src="{{static_urls['logs.js']}}" defer></script>
