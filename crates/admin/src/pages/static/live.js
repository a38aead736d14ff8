// mailferry admin dashboard: live progress without reloading the page.
// Every 2 s it fetches the server-rendered fragment of the batches (the same HTML the
// page was built with, the page's query passed on for its banner) and swaps it in.
// The polite live region says only what changed state ("alice@example.com: Synced"),
// not that values were refreshed. Without JavaScript the page still shows current
// values and has a Refresh link; every button is a plain POST form or a link either way.
(function () {
  'use strict';
  var box = document.getElementById('live');
  var announce = document.getElementById('live-announce');
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute('data-live') + window.location.search;
  var last = null;
  var busy = false;
  var stopped = false;
  var updates = 0;

  // Mailbox -> state label, and batch -> suspended, of the fragment now in the page.
  function states() {
    var out = {};
    box.querySelectorAll('tr[data-mailbox]').forEach(function (tr) {
      var section = tr.closest('[data-batch]');
      var batch = section ? section.getAttribute('data-batch') : '';
      var badge = tr.querySelector('.badge');
      out[batch + '\u0000' + tr.getAttribute('data-mailbox')] =
        tr.getAttribute('data-mailbox') + ': ' + (badge ? badge.textContent : tr.getAttribute('data-state'));
    });
    return out;
  }

  function say(text) { if (announce && text) { announce.textContent = text; } }

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
          var before = states();
          // Keep the keyboard focus on the same control across the swap.
          var focused = document.activeElement && document.activeElement.id;
          box.innerHTML = html;
          last = html;
          if (focused) {
            var el = document.getElementById(focused);
            if (el) { el.focus(); }
          }
          var after = states();
          var changed = Object.keys(after).filter(function (k) { return before[k] !== after[k]; })
            .map(function (k) { return after[k]; });
          if (changed.length) { say(changed.join('; ') + '.'); }
        }
        updates += 1;
        box.setAttribute('data-updates', String(updates));
      })
      .catch(function (e) { say('Live updates paused: ' + e.message + '.'); })
      .then(function () { busy = false; });
  }

  setInterval(tick, 2000);
})();
