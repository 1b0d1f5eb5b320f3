<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}'>
% if csrf_token:
<meta name="csrf-token" content="{{csrf_token}}">
% end
<title>{{title}} &middot; fmappliance</title>
<link rel="stylesheet" href="{{static_urls['app.css']}}">
<link rel="icon" href="data:,">
<script src="{{static_urls['htmx.min.js']}}" defer></script>
<script src="{{static_urls['app.js']}}" defer></script>
</head>
<body data-jobs="/jobs/">
<header class="topbar">
<a class="brand" href="/">fmappliance</a>
% if user:
<nav class="nav">
% if not enrolling:
<a href="/dashboard" class="{{'active' if active == 'dashboard' else ''}}">Dashboard</a>
<a href="/scheduler" class="{{'active' if active == 'scheduler' else ''}}">Schedules</a>
% if can('GET', '/imports'):
<a href="/imports" class="{{'active' if active == 'imports' else ''}}">Imports</a>
% end
<a href="/audit" class="{{'active' if active == 'audit' else ''}}">Audit log</a>
% if can('GET', '/account/users'):
<a href="/account/users" class="{{'active' if active == 'users' else ''}}">Users</a>
% end
<a href="/account" class="{{'active' if active == 'account' else ''}}">Account</a>
% end
<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf_token" value="{{csrf_token}}"><button type="submit" class="link">Sign out ({{user}})</button></form>
</nav>
% end
</header>
% if get('servers'):
<nav class="server-switch" aria-label="Server">Server:
% for name in servers:
<a href="/s/{{name}}/dashboard" class="{{'active' if name == server else ''}}"{{!' aria-current="true"' if name == server else ''}}>{{name}}</a>
% end
<a href="/fleet">Fleet</a>
</nav>
% end
% if banner:
<div class="banner notice notice-error" role="alert">{{banner}}</div>
% end
% if get('server_banner'):
<div class="banner notice notice-error server-banner" role="alert">{{server_banner}}</div>
% end
<main hx-target="#action-results" hx-swap="afterbegin">
<div id="notices">
% for kind, text in notices:
{{!partial('notice', kind=kind, text=text)}}
% end
</div>
<div id="action-results" aria-live="polite"></div>
{{!body}}
</main>
</body>
</html>
