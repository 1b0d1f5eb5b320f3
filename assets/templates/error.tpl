<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{status}} &middot; fmappliance</title>
<link rel="stylesheet" href="{{static_urls['app.css']}}">
<link rel="icon" href="data:,">
</head>
<body>
<header class="topbar"><a class="brand" href="/dashboard">fmappliance</a></header>
<main>
<h1>{{status}}</h1>
<div class="notice notice-error" role="alert">{{message}}</div>
<p><a href="/dashboard">Back to the dashboard</a></p>
</main>
</body>
</html>
