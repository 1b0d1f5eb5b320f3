<div class="page-head"><h1>Your recovery codes</h1></div>
<section class="card">
<p>Your second factor is set up. Keep these recovery codes somewhere safe: each one signs you in once
when you do not have your phone. <strong>They are shown only now.</strong></p>
<ul class="recovery-codes" id="recovery-codes">
% for code in codes:
<li><code>{{code}}</code></li>
% end
</ul>
<p class="actions codes-save">
<a class="button" href="{{download_href}}" download="{{download_name}}">Download as a text file</a>
<button type="button" data-copy="recovery-codes-text">Copy them</button>
<span class="copy-status muted" role="status"></span>
</p>
<textarea id="recovery-codes-text" class="codes-text" readonly rows="4" aria-label="The recovery codes as text">{{codes_text}}</textarea>
<form method="get" action="{{next_action}}" class="codes-saved" data-next="{{next_path}}">
% for name, value in next_fields:
<input type="hidden" name="{{name}}" value="{{value}}">
% end
<label class="inline-check"><input type="checkbox" id="codes-saved" required> <span>I have saved these codes somewhere safe</span></label>
<p><button type="submit" class="primary">Continue</button></p>
</form>
</section>
