// edge-xray serve: drop scans on the page, show a heatmap on demand, print a slip. No libraries.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("upload");
    var input = document.getElementById("file");
    var drop = document.getElementById("drop");
    var chosen = document.getElementById("chosen");
    var go = document.getElementById("go");

    function showChosen() {
      var n = input.files ? input.files.length : 0;
      chosen.textContent = n === 0 ? "" : (n === 1 ? input.files[0].name : n + " scans chosen");
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
        form.requestSubmit ? form.requestSubmit() : form.submit();
      });
      form.addEventListener("submit", function (e) {
        if (!input.files || input.files.length === 0) {
          e.preventDefault();
          chosen.textContent = "Choose one or more scans first.";
          return;
        }
        go.disabled = true;
        go.textContent = "Screening\u2026";
      });
      window.addEventListener("pageshow", function () { go.disabled = false; go.textContent = "Screen"; });
    }

    document.querySelectorAll(".heatmap-btn").forEach(function (b) {
      b.addEventListener("click", function () {
        var img = document.getElementById(b.getAttribute("data-target"));
        if (!img.getAttribute("src")) img.setAttribute("src", b.getAttribute("data-src"));
        img.hidden = !img.hidden;
        b.textContent = img.hidden ? "Show heatmap" : "Hide heatmap";
      });
    });

    document.querySelectorAll("[data-print]").forEach(function (b) {
      b.addEventListener("click", function () { window.print(); });
    });
  });
})();
