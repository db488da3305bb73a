/* Course scripts (Jupyter Book includes every .js file of book/_static). */

/* Tap (or click) a figure to open it at full resolution: on a phone the page shows figures at the
   width of the screen, and a chart's small labels are read by opening the image and zooming in.
   Diagrams are drawn large enough to be read in the page (tests/test_book.py measures both). */
function courseLinkFigures() {
  document.querySelectorAll("main img[src*='_images/']").forEach((img) => {
    if (img.closest("a")) return;
    const link = document.createElement("a");
    link.href = img.getAttribute("src");
    link.className = "figure-zoom";
    link.title = "Open the figure at full resolution";
    img.replaceWith(link);
    link.appendChild(img);
  });
}

/* Search result snippets: show a formula as plain text (p_t, α, γ) instead of its TeX source
   (\(p_t\), \alpha, \gamma). Sphinx's searchtools builds a snippet from the page's HTML. */
const COURSE_TEX_SYMBOLS = {
  alpha: "α", beta: "β", gamma: "γ", delta: "δ", Delta: "Δ", epsilon: "ε", lambda: "λ", mu: "μ", pi: "π",
  sigma: "σ", Sigma: "Σ", theta: "θ", phi: "φ", sum: "Σ", times: "×", cdot: "·", le: "≤", leq: "≤", ge: "≥",
  geq: "≥", ne: "≠", neq: "≠", approx: "≈", infty: "∞", to: "→", rightarrow: "→", in: "∈", partial: "∂",
  top: "ᵀ", ldots: "…", dots: "…", cdots: "⋯", lfloor: "⌊", rfloor: "⌋", sqrt: "√", log: "log", min: "min",
  max: "max", exp: "exp",
};

function courseTexToText(tex) {
  let text = tex.replace(/^\s*(\\\(|\\\[|\$\$?)/, "").replace(/(\\\)|\\\]|\$\$?)\s*$/, "");
  text = text.replace(/\\(?:begin|end)\{[a-z*]+\}/g, " ");
  for (let i = 0; i < 3; i++) text = text.replace(/\\frac\{([^{}]*)\}\{([^{}]*)\}/g, "($1)/($2)");
  text = text.replace(/\\(?:text|mathrm|mathbf|mathcal|operatorname|textbf|mathit)\{([^{}]*)\}/g, "$1");
  text = text.replace(/\\([A-Za-z]+)/g, (whole, name) => COURSE_TEX_SYMBOLS[name] ?? "");
  text = text.replace(/\\[,;:! ]|&|\\\\/g, " ").replace(/\\([_{}%#$])/g, "$1").replace(/[{}]/g, "");
  return text.replace(/\s+/g, " ").trim();
}

function coursePlainSearchSnippets() {
  if (typeof Search === "undefined" || !Search.htmlToText || Search.courseMathAsText) return;
  const htmlToText = Search.htmlToText;
  Search.htmlToText = (htmlString, anchor) => {
    const doc = new DOMParser().parseFromString(htmlString, "text/html");
    doc.querySelectorAll(".math").forEach((math) => { math.textContent = courseTexToText(math.textContent); });
    return htmlToText(doc.documentElement.outerHTML, anchor);
  };
  Search.courseMathAsText = true;
}

document.addEventListener("DOMContentLoaded", () => {
  courseLinkFigures();
  coursePlainSearchSnippets();
});
