// scimledger console: small progressive enhancements. Everything works without it.
(function () {
  "use strict";
  var pendingG = false, timer = null;

  function rows() {
    var table = document.querySelector("main table.data tbody");
    return table ? Array.prototype.filter.call(table.rows, function (r) { return r.querySelector("a"); }) : [];
  }
  function move(step) {
    var list = rows();
    if (!list.length) return;
    var at = list.findIndex(function (r) { return r.classList.contains("current"); });
    if (at >= 0) list[at].classList.remove("current");
    at = Math.max(0, Math.min(list.length - 1, at + step));
    list[at].classList.add("current");
    list[at].querySelector("a").focus();
  }

  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName)) return;
    if (e.key === "/") {
      var search = document.querySelector("[data-search]");
      if (search) { e.preventDefault(); search.focus(); search.select(); }
      return;
    }
    if (pendingG) {
      pendingG = false;
      var link = document.querySelector('.top nav a[data-key="' + e.key.toLowerCase() + '"]');
      if (link) { e.preventDefault(); link.click(); }
      return;
    }
    if (e.key === "g") { pendingG = true; clearTimeout(timer); timer = setTimeout(function () { pendingG = false; }, 1200); return; }
    if (e.key === "j") { e.preventDefault(); move(1); }
    if (e.key === "k") { e.preventDefault(); move(-1); }
  });

  // Sort the rows of the current page by a column: keyboard-operable header buttons.
  function sortable(table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, index) {
      if (th.querySelector("a, button") || !th.textContent.trim()) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(button);
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { if (h.hasAttribute("aria-sort")) h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var list = Array.prototype.slice.call(body.rows).filter(function (r) { return r.cells.length > index; });
        list.sort(function (a, b) {
          var x = a.cells[index].getAttribute("data-sort") || a.cells[index].textContent.trim();
          var y = b.cells[index].getAttribute("data-sort") || b.cells[index].textContent.trim();
          var nx = parseFloat(x), ny = parseFloat(y);
          var c = (!isNaN(nx) && !isNaN(ny) && String(nx) === x && String(ny) === y) ? nx - ny : x.localeCompare(y, undefined, { numeric: true });
          return ascending ? c : -c;
        });
        list.forEach(function (r) { body.appendChild(r); });
      });
    });
  }
  document.querySelectorAll("table.sortable").forEach(sortable);

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.getAttribute("data-copy"));
      field.select();
      var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard) navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
      else { document.execCommand("copy"); done(); }
    });
  });
})();
