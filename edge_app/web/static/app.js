// edge-xray serve: drop scans on the page, check their size before sending, show a heatmap on demand,
// print a slip. No libraries. Every word comes from the page (data-* attributes), in its language.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("upload");
    var input = document.getElementById("file");
    var drop = document.getElementById("drop");
    var chosen = document.getElementById("chosen");
    var go = document.getElementById("go");

    function text(name, n) { return (form.getAttribute("data-" + name) || "").replace("{n}", n); }
    function tooLarge() {
      var total = 0, i;
      for (i = 0; i < input.files.length; i++) total += input.files[i].size;
      return total > Number(form.getAttribute("data-max-bytes")) ||
        input.files.length > Number(form.getAttribute("data-max-files"));
    }
    function showChosen() {
      var n = input.files ? input.files.length : 0;
      chosen.textContent = n === 0 ? "" : (n === 1 ? input.files[0].name : text("chosen", n));
      if (n && tooLarge()) chosen.textContent = text("too-large", n);
    }
    if (form && input) {
      input.addEventListener("change", showChosen);
      ["dragenter", "dragover"].forEach(function (t) {
        drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.add("over"); });
      });
      ["dragleave", "drop"].forEach(function (t) {
        drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.remove("over"); });
      });
      drop.addEventListener("drop", function (e) {
        if (!e.dataTransfer || !e.dataTransfer.files.length) return;
        input.files = e.dataTransfer.files;
        showChosen();
        if (!tooLarge()) form.requestSubmit ? form.requestSubmit() : form.submit();
      });
      form.addEventListener("submit", function (e) {
        if (!input.files || input.files.length === 0 || tooLarge()) {
          e.preventDefault();
          chosen.textContent = input.files && input.files.length ? text("too-large") : text("choose");
          return;
        }
        go.disabled = true;
        go.textContent = text("busy");
      });
      window.addEventListener("pageshow", function () { go.disabled = false; go.textContent = text("go"); });
    }

    document.querySelectorAll(".heatmap-btn").forEach(function (b) {
      b.addEventListener("click", function () {
        var img = document.getElementById(b.getAttribute("data-target"));
        if (!img.getAttribute("src")) img.setAttribute("src", b.getAttribute("data-src"));
        img.hidden = !img.hidden;
        b.textContent = b.getAttribute(img.hidden ? "data-show" : "data-hide");
        b.setAttribute("aria-expanded", img.hidden ? "false" : "true");
      });
    });

    document.querySelectorAll("[data-print]").forEach(function (b) {
      b.addEventListener("click", function () { window.print(); });
    });

    var results = document.getElementById("results");
    if (results && window.location.hash === "#results") results.focus({ preventScroll: true });
  });
})();
