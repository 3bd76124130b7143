/* Counts down the seconds of every <span class="countdown" data-seconds="N"> on the page.
 *
 * The page works the same without this script: the resend button is then simply enabled,
 * and a resend that comes too early is answered by the server with the time left. With it,
 * the button named by data-enables stays disabled until the count reaches 0 (and the element
 * named by data-reveals, such as the "try again" link of a limit page, stays hidden); then the
 * countdown's box ([data-countdown-box]) shows its data-done text (or hides when that is
 * empty) and a status region announces data-announce (or data-done) once, not every second.
 * Loaded as an external file: the Content-Security-Policy allows no inline script. */
(function () {
  "use strict";
  var PERSIAN = "۰۱۲۳۴۵۶۷۸۹";
  var persian = document.documentElement.lang === "fa";

  function localize(n) {
    var s = String(n);
    return persian ? s.replace(/[0-9]/g, function (d) { return PERSIAN.charAt(+d); }) : s;
  }

  function finish(el, button) {
    if (button) { button.disabled = false; }
    var reveals = el.getAttribute("data-reveals");
    var shown = reveals ? document.getElementById(reveals) : null;
    if (shown) { shown.hidden = false; }
    var box = el.closest ? el.closest("[data-countdown-box]") : null;
    if (!box) { return; }
    var done = box.getAttribute("data-done") || "";
    var announce = box.getAttribute("data-announce") || done;
    if (done) { box.textContent = done; } else { box.hidden = true; }
    var status = document.querySelector("[data-announce]:not([data-countdown-box])");
    if (status && announce) { status.textContent = announce; }
  }

  function start(el) {
    var seconds = parseInt(el.getAttribute("data-seconds"), 10);
    var target = el.getAttribute("data-enables");
    var button = target ? document.getElementById(target) : null;
    if (!(seconds > 0)) { return; }
    // Time from the clock, not from counting ticks: a phone may slow timers in the background.
    var end = Date.now() + seconds * 1000;
    if (button) { button.disabled = true; }
    function tick() {
      var left = Math.max(0, Math.ceil((end - Date.now()) / 1000));
      el.textContent = localize(left);
      if (left > 0) {
        window.setTimeout(tick, Math.min(1000, end - Date.now() - (left - 1) * 1000 + 20));
      } else {
        finish(el, button);
      }
    }
    tick();
  }

  var counts = document.querySelectorAll(".countdown[data-seconds]");
  for (var i = 0; i < counts.length; i += 1) { start(counts[i]); }
}());
