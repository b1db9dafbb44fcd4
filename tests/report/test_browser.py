"""The HTML report in a real headless browser (Debian's chromium): it loads with no error and no console
error, fetches nothing (the page's Content-Security-Policy forbids it; a violation would be an error),
every plot is laid out with a non-empty size and drawn content, and a screenshot is written. Skipped only
when no Chromium is installed (`apt-get install chromium`; `.ci/run` installs it)."""

import json
import re
import subprocess

import pytest

from lowering.report_html import CSP

from .conftest import chromium
from .test_html_report import RUN_PLOTS

pytestmark = [pytest.mark.e2e]

# Injected into a copy of the page (the page itself runs no script): records errors, console errors and CSP
# violations from the first moment, then on load writes what it found into the DOM for --dump-dom.
PROBE = """<script>
window.__errors = [];
addEventListener("error", e => __errors.push("error: " + (e.message || (e.target && (e.target.src ||
  e.target.href)) || e.type)), true);
addEventListener("unhandledrejection", e => __errors.push("rejection: " + e.reason));
addEventListener("securitypolicyviolation", e => __errors.push("csp: " + e.violatedDirective + " " +
  e.blockedURI));
for (const level of ["error", "warn"]) {
  const original = console[level];
  console[level] = (...args) => { __errors.push(level + ": " + args.join(" ")); original(...args); };
}
addEventListener("load", () => {
  const plots = [...document.querySelectorAll("svg")].map(s => {
    const box = s.getBoundingClientRect();
    return {plot: s.dataset.plot || null, width: box.width, height: box.height,
            shapes: s.querySelectorAll("path, use, rect, text, line, polyline").length,
            visible: getComputedStyle(s).display !== "none"};
  });
  const fetched = performance.getEntriesByType("resource").map(r => r.name);
  const probe = document.createElement("pre");
  probe.id = "__probe";
  probe.textContent = JSON.stringify({errors: __errors, plots, fetched, title: document.title,
                                      width: document.documentElement.scrollWidth});
  document.body.appendChild(probe);
});
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND"]  # any network fetch fails (and would be recorded)


def _chromium(browser, profile, *args, timeout=120):
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                           *args], capture_output=True, text=True, timeout=timeout)


def _console_errors(stderr: str) -> list[str]:
    """Chromium's own log lines for the page's console (``CONSOLE(...)``/``:CONSOLE:``) at error level."""
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line and re.search(r"(ERROR|Uncaught|\berror\b)", line)]


@pytest.fixture(scope="module")
def browser():
    path = chromium()
    if path is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium; .ci/run installs it)")
    return path


def test_page_loads_without_errors_and_every_plot_renders(npu_run, browser, tmp_path):
    page = npu_run.html.read_text()
    assert CSP in page
    # The copy keeps the page's policy, allowing only the probe's inline script.
    probed = page.replace("script-src 'none'", "script-src 'unsafe-inline'")
    probed = probed.replace("<head>", "<head>" + PROBE, 1)
    copy = npu_run.html.with_name("probed.html")
    copy.write_text(probed)
    done = _chromium(browser, tmp_path / "profile", "--dump-dom", copy.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="__probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not run: {done.stderr[-2000:]}"
    import html

    probe = json.loads(html.unescape(found.group(1)))
    assert probe["errors"] == []
    assert _console_errors(done.stderr) == []
    assert probe["fetched"] == []
    assert probe["title"].startswith("lowering report")
    plots = [p for p in probe["plots"] if p["plot"]]
    assert [p["plot"] for p in plots] == RUN_PLOTS
    assert len(plots) == len(probe["plots"])  # no stray SVG
    for p in plots:
        assert p["visible"] and p["width"] > 200 and p["height"] > 100 and p["shapes"] > 10, p
    assert probe["width"] <= 1280 + 1  # wide tables scroll inside the page, the page does not


def test_screenshot(npu_run, browser, tmp_path):
    shot = tmp_path / "report.png"
    done = _chromium(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,4000",
                     npu_run.html.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert _console_errors(done.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    Image = pytest.importorskip("PIL.Image")  # matplotlib's dependency
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        colours = image.convert("RGB").resize((160, 500)).getcolors(maxcolors=1 << 16)
        assert colours is not None and len(colours) > 50  # drawn plots and tables, not a blank page
