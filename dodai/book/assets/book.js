// Render every .math element with the vendored KaTeX (no network). A formula KaTeX cannot parse is shown
// as its TeX source in an element of class "math-error" (the book's tests look for those).
(function () {
  document.querySelectorAll(".math").forEach(function (el) {
    var tex = el.textContent;
    try {
      katex.render(tex, el, {displayMode: true, throwOnError: true});
      el.classList.add("math-ok");
    } catch (e) {
      el.classList.add("math-error");
      el.setAttribute("title", String(e));
    }
  });
  document.documentElement.setAttribute("data-math-done", "1");
})();
