<h1>Fleet</h1>
<p class="muted">Every server of this dashboard's fleet, problems first; refreshed every 10 s.</p>
<div hx-get="/fleet" hx-trigger="every 10s" hx-swap="innerHTML">
{{!partial('fleet_table', servers=servers)}}
</div>
