// The mxguard console's live updates. The page is complete without this
// file; with it, its sections are replaced from the server's event stream
// each second, and an action is sent without leaving the page.
'use strict';
(function () {
	var form = document.getElementById('act');
	var notice = document.getElementById('notice');
	var live = document.getElementById('live');
	if (form && window.fetch) {
		form.addEventListener('submit', function (ev) {
			ev.preventDefault();
			var data = new FormData(form);
			if (ev.submitter && ev.submitter.name) {
				data.set(ev.submitter.name, ev.submitter.value);
			}
			fetch(form.action, {method: 'POST', body: new URLSearchParams(data), headers: {'Accept': 'text/plain'}})
				.then(function (r) { return r.text().then(function (t) { show(t, r.ok); }); })
				.catch(function (e) { show('ERR ' + e, false); });
		});
	}
	function show(text, ok) {
		if (notice) {
			notice.textContent = text;
			notice.className = ok ? 'ok' : 'bad';
		}
	}
	if (window.EventSource) {
		var es = new EventSource('events');
		es.addEventListener('update', function (ev) {
			var parts = JSON.parse(ev.data);
			for (var id in parts) {
				var el = document.getElementById(id);
				if (el) {
					el.innerHTML = parts[id];
				}
			}
			live.textContent = 'live';
			live.className = 'live on';
		});
		es.addEventListener('error', function () {
			live.textContent = 'live updates interrupted: reconnecting';
			live.className = 'live off';
		});
	}
})();
