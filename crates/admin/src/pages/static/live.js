// mailferry admin dashboard: live progress without reloading the page.
// Every 2 s it fetches the server-rendered fragment of the batches (the same HTML the
// page was built with) and swaps it in. Without JavaScript the page still shows current
// values and has a Refresh link; every button is a plain POST form either way.
(function () {
  'use strict';
  var box = document.getElementById('live');
  var status = document.getElementById('live-status');
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute('data-live');
  var last = null;
  var busy = false;
  var stopped = false;

  function say(text) { if (status) { status.textContent = text; } }

  function tick() {
    if (busy || stopped || document.hidden) { return; }
    busy = true;
    fetch(url, { credentials: 'same-origin', cache: 'no-store', headers: { 'Accept': 'text/html' } })
      .then(function (r) {
        if (r.redirected || r.status === 401) {
          stopped = true;
          throw new Error('your session ended; reload the page to log in again');
        }
        if (!r.ok) { throw new Error('the server answered ' + r.status); }
        return r.text();
      })
      .then(function (html) {
        if (html !== last) {
          // Keep the keyboard focus on the same control across the swap.
          var focused = document.activeElement && document.activeElement.id;
          box.innerHTML = html;
          last = html;
          if (focused) {
            var el = document.getElementById(focused);
            if (el) { el.focus(); }
          }
        }
        say('Live: updated ' + new Date().toLocaleTimeString() + '.');
      })
      .catch(function (e) { say('Live updates paused: ' + e.message + '.'); })
      .then(function () { busy = false; });
  }

  say('Live: updating every 2 s.');
  setInterval(tick, 2000);
})();
