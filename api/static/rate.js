// Keyboard-first rating: arrows move between hashtags, number keys answer the focused question
// and move on, Enter submits. Focusing or hovering a hashtag shows its attention map.
(function () {
  "use strict";
  var form = document.getElementById("rate-form");
  if (!form) { return; }
  var tags = Array.prototype.slice.call(form.querySelectorAll("input.tag"));
  var scales = Array.prototype.slice.call(form.querySelectorAll("fieldset.scale"));
  var submit = document.getElementById("submit");

  function showAttention(index) {
    var maps = document.querySelectorAll(".attn");
    for (var i = 0; i < maps.length; i++) {
      maps[i].hidden = maps[i].id !== "attn-" + index;
    }
  }

  // The first control of the question after `scaleIndex` (-1: after the hashtags), or Submit.
  function focusAfter(scaleIndex) {
    var next = scales[scaleIndex + 1];
    if (next) {
      var checked = next.querySelector("input:checked");
      (checked || next.querySelector("input")).focus();
    } else {
      submit.focus();
    }
  }

  tags.forEach(function (box, i) {
    var index = box.getAttribute("data-index");
    var row = box.parentNode;
    box.addEventListener("focus", function () { showAttention(index); });
    box.addEventListener("blur", function () { showAttention(null); });
    row.addEventListener("mouseenter", function () { showAttention(index); });
    row.addEventListener("mouseleave", function () {
      showAttention(document.activeElement && document.activeElement.classList.contains("tag")
        ? document.activeElement.getAttribute("data-index") : null);
    });
    box.addEventListener("keydown", function (e) {
      if (e.altKey || e.ctrlKey || e.metaKey) { return; }
      if (e.key === "ArrowDown" || e.key === "ArrowRight") {
        e.preventDefault();
        if (tags[i + 1]) { tags[i + 1].focus(); } else { focusAfter(-1); }
      } else if (e.key === "ArrowUp" || e.key === "ArrowLeft") {
        e.preventDefault();
        if (tags[i - 1]) { tags[i - 1].focus(); }
      } else if (e.key === "1" || e.key === "0") {
        e.preventDefault();
        box.checked = e.key === "1";
        if (tags[i + 1]) { tags[i + 1].focus(); } else { focusAfter(-1); }
      }
    });
  });

  // Autofocus may have happened before this script ran: no focus event reached the listeners.
  if (tags.indexOf(document.activeElement) >= 0) {
    showAttention(document.activeElement.getAttribute("data-index"));
  }

  scales.forEach(function (set, s) {
    var radios = Array.prototype.slice.call(set.querySelectorAll("input[type=radio]"));
    set.addEventListener("keydown", function (e) {
      if (e.altKey || e.ctrlKey || e.metaKey) { return; }
      var n = parseInt(e.key, 10);
      if (n >= 1 && n <= radios.length) {
        e.preventDefault();
        radios[n - 1].checked = true;
        focusAfter(s);
      } else if (e.key === "ArrowUp" && s === 0 && radios.indexOf(document.activeElement) === 0 && tags.length) {
        // From the first story answer back up to the last hashtag.
        e.preventDefault();
        tags[tags.length - 1].focus();
      }
    });
  });

  form.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && e.target !== submit && !e.altKey && !e.ctrlKey && !e.metaKey) {
      e.preventDefault();
      if (form.reportValidity()) { form.requestSubmit(); }
    }
  });
})();
