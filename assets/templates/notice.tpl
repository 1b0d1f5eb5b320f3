<div class="notice notice-{{'ok' if kind == 'ok' else 'error'}}" role="{{'status' if kind == 'ok' else 'alert'}}">{{text}}</div>
