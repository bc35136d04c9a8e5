"""The web UI end to end in a real headless Chromium (Debian's ``chromium`` driven by Playwright).

An administrator logs in through the form, searches with a typo and finds the package, opens its page and
sees its CVE, changes the CVE's curation status, creates a read token and copies the ``.condarc`` snippet,
starts a mirror run and watches its progress to the end, creates a filtered mirror from the form and runs
it; then a user without rights fails to see a private
channel anywhere (search, channel list, the package page's URL answers 404). Screenshots of the main pages
are written to ``docs/screenshots/`` (desktop width, and the package page at phone width).

One backend (SQLite): the browser adds nothing database-specific; ``test_ui_http.py`` runs on both.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.accounts import ok
from tests.support.browser import DESKTOP, PHONE, chromium
from tests.support.packages import make_conda
from tests.support.server import Server, start_server, stop_server
from tests.support.static_channel import StaticChannel, build_channel

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ZLIB_NVD = ("vulns", "nvd", "fkie-cad", "CVE-2022", "CVE-2022-374xx", "CVE-2022-37434.json")
PASSWORD = "correct-horse-battery"
TIMEOUT = 60_000  # ms: generous upper bounds for waits, never asserted durations


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, testdata: Path) -> Iterator[tuple[Server, StaticChannel]]:
    server, _ = start_server(tmp_path_factory.mktemp("data"), "sqlite")
    try:
        server.channel("science", "public")
        server.channel("secret-lab", "private")
        with server.client() as c:
            ok(c.patch("/api/channels/science", json={"description": "Packages our teams build and use"}))
            ok(c.patch("/api/channels/secret-lab", json={"description": "Unreleased work"}))
        for pkg in sorted((testdata / "packages").glob("*/zlib-1.2.11-*")):
            ok(server.upload("science", pkg))
        work = tmp_path_factory.mktemp("pkgs")
        tools = make_conda(work, "zlib-tools", "1.0", "0", index_extra={"depends": ["zlib >=1.2"]})
        ok(server.upload("science", tools))
        ok(server.upload("secret-lab", make_conda(work, "labtool", "0.1", "0", index_extra={"depends": ["zlib"]})))
        with server.client() as c:
            r = c.post("/api/cves/sync", json={"sources": [str(testdata.joinpath(*ZLIB_NVD))]})
            assert r.status_code == 200, r.text
            for user, admin in (("ada", True), ("bob", False)):
                ok(c.post("/api/users", json={"username": user, "password": PASSWORD, "is_admin": admin}))
        root = build_channel(
            testdata / "packages",
            tmp_path_factory.mktemp("up"),
            subdirs=("noarch",),
            names={"dependency", "dependent", "another_dependent"},
        )
        with StaticChannel(root) as upstream:
            server.channel("mirrored", "public")
            server.channel("picked", "public")  # filled by a mirror created in the browser
            with server.client() as c:
                ok(
                    c.post(
                        "/api/mirrors",
                        json={
                            "name": "test-upstream",
                            "upstream": upstream.url,
                            "channel": "mirrored",
                            "subdirs": ["noarch"],
                        },
                    ),
                    201,
                )
            yield server, upstream
    finally:
        stop_server(server, None)


A11Y = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push("html without lang");
  for (const role of ["main", "header", "nav", "footer"]) {
    if (document.querySelectorAll(role).length < 1) problems.push("no " + role + " landmark");
  }
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one h1");
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label")) problems.push("unlabelled " + el.outerHTML);
  }
  for (const el of document.querySelectorAll("button, a")) {
    if (!(el.textContent.trim() || el.getAttribute("aria-label"))) problems.push("nameless " + el.outerHTML);
  }
  for (const th of document.querySelectorAll("thead th")) {
    if (!th.getAttribute("scope")) problems.push("th without scope " + th.outerHTML);
  }
  for (const svg of document.querySelectorAll("svg")) {
    if (svg.getAttribute("role") !== "img" || !svg.getAttribute("aria-labelledby")) problems.push("unlabelled svg");
  }
  return problems;
}"""


def shot(page: Any, name: str) -> None:
    """A screenshot of every main page, which must also pass the basic accessibility checks."""
    problems = page.evaluate(A11Y)
    assert not problems, (page.url, problems)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def login(page: Any, base: str, user: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")
    assert page.locator("header .who").inner_text().startswith(user)


def test_ui_end_to_end(site: tuple[Server, StaticChannel]) -> None:
    server, upstream = site
    base = server.url
    with chromium() as browser:
        ctx = browser.new_context(viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"])
        ctx.set_default_timeout(TIMEOUT)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        expected_404 = f"{base}/channels/secret-lab/packages/labtool"

        def console(m: Any) -> None:
            if m.type == "error" and m.location.get("url") != expected_404:
                errors.append(f"{m.text} ({m.location.get('url')})")

        page.on("console", console)

        page.goto(base + "/")
        shot(page, "home-anonymous")
        login(page, base, "ada")
        shot(page, "home")

        # search with a typo: the suggestion or the fuzzy hit leads to zlib
        page.get_by_label("Search packages").fill("zlibb")
        page.get_by_label("Search packages").press("Enter")
        page.wait_for_url(re.compile(r".*/search\?q=zlibb.*"))
        hit = page.locator("a.hit-name", has_text=re.compile(r"^zlib$"))
        if hit.count() == 0:  # no fuzzy hit on this page: follow "did you mean"
            page.locator("#did-you-mean").click()
            hit = page.locator("a.hit-name", has_text=re.compile(r"^zlib$"))
        shot(page, "search")
        # every facet filters, the CVE score band too
        page.locator("#facet-score a", has_text="critical").click()
        page.wait_for_url(re.compile(r".*/search\?.*score=critical.*"))
        assert page.locator("a.hit-name", has_text=re.compile(r"^zlib$")).count() == 1
        assert page.locator("a.hit-name", has_text="zlib-tools").count() == 0  # no CVE: not in that band
        hit = page.locator("a.hit-name", has_text=re.compile(r"^zlib$"))
        hit.first.click()
        page.wait_for_url(f"{base}/channels/science/packages/zlib")
        assert page.locator("#pkg-name").inner_text().startswith("zlib")
        cves = page.locator("#cve-table")
        assert "CVE-2022-37434" in cves.inner_text()
        assert "zlib-tools" in page.locator("#dependants").inner_text()
        assert page.locator("#install-conda").inner_text() == f"conda install -c {base}/api/repo/science zlib"
        assert page.locator("#file-table tbody tr").count() > 0  # files with size and sha256
        shot(page, "package")

        # the CVE page, and a curation status change by a curator
        page.locator("#cve-table a", has_text="CVE-2022-37434").click()
        page.wait_for_url(f"{base}/cves/CVE-2022-37434")
        rows = page.locator("#cve-files tbody tr")
        assert rows.count() >= 1
        rows.first.locator("input[type=checkbox]").check()
        page.get_by_label("New status").select_option("mitigated")
        page.get_by_label("Reason").fill("built with the patched inflate")
        page.get_by_role("button", name="Save status").click()
        page.wait_for_url(f"{base}/cves/CVE-2022-37434")
        assert "mitigated" in page.locator("#cve-files tbody tr").first.locator(".status").inner_text()
        assert "built with the patched inflate" in page.content()
        shot(page, "cve")

        # a read token and its .condarc snippet, copied to the clipboard
        page.goto(f"{base}/tokens")
        page.get_by_label("science").check()
        page.get_by_role("button", name="Create token").click()
        snippet = page.locator("#condarc-snippet").inner_text()
        assert re.search(rf"channel_alias: {re.escape(base)}/api/repo/t/cv-[A-Za-z0-9-]+", snippet), snippet
        page.get_by_role("button", name="Copy .condarc").click()
        page.locator(".copied", has_text="Copied.").first.wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == snippet
        shot(page, "token")

        # a mirror run, watched live to its end: the upstream holds its package files until the page has
        # shown the run going, then lets them through; the page follows without a reload
        upstream.gate = threading.Event()
        page.goto(f"{base}/mirrors/test-upstream")
        page.get_by_role("button", name="Run now").click()
        page.wait_for_url(re.compile(r".*/mirrors/test-upstream/runs/\d+$"))
        page.locator("#run-live[data-status=running]").wait_for()
        assert page.locator("#run-done").inner_text() == "0"
        shot(page, "mirror-run-live")
        upstream.gate.set()
        page.locator("#run-live[data-status=completed]").wait_for()
        done, total = page.locator("#run-done").inner_text(), page.locator("#run-total").inner_text()
        assert int(done) == int(total) > 0
        assert page.locator("#run-status").inner_text() == "completed"
        shot(page, "mirror-run")
        page.goto(f"{base}/mirrors/test-upstream?q=dependent")
        assert "kept" in page.locator("#explain-table").inner_text()
        shot(page, "mirror")

        # a new mirror from the form, with a filter: one package and its dependencies
        page.goto(f"{base}/mirrors")
        page.locator("#create-mirror summary").click()
        page.get_by_label("Name").fill("picked-deps")
        page.get_by_label("Upstream channel URL").fill(upstream.url)
        page.get_by_label("Into channel").select_option("picked")
        page.get_by_label("Only these packages").fill("dependent")
        page.get_by_label("and their dependencies").check()
        page.get_by_label("When upstream removes a file").select_option("keep")
        shot(page, "mirror-create")
        page.get_by_role("button", name="Create mirror").click()
        page.wait_for_url(f"{base}/mirrors/picked-deps")
        page.get_by_role("button", name="Run now").click()
        page.wait_for_url(re.compile(r".*/mirrors/picked-deps/runs/\d+$"))
        page.locator("#run-live[data-status=completed]").wait_for()
        with server.client() as c:
            got = {f["name"] for f in c.get("/api/channels/picked/files").json()}
            exported = c.get("/api/mirrors/picked-deps/export").text
        assert got == {"dependent", "dependency"}, got  # another_dependent filtered out
        assert "include_dependencies: true" in exported and "on_remove: keep" in exported

        for path, name in (
            ("/channels/science", "channel"),
            ("/admin", "admin"),
            ("/admin/users", "admin-users"),
            ("/admin/audit", "audit"),
            ("/provides?path=include/zlib.h", "provides"),
        ):
            page.goto(base + path)
            shot(page, name)
        assert page.locator("table tbody tr").count() >= 1

        # log out; a user without rights sees the private channel nowhere
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(f"{base}/")
        login(page, base, "bob")
        page.goto(f"{base}/search?q=labtool")
        assert "labtool" not in page.locator("main").inner_text().replace("labtool", "", 1)
        assert page.locator("a.hit-name").count() == 0
        page.goto(f"{base}/channels")
        assert "secret-lab" not in page.content()
        response = page.goto(f"{base}/channels/secret-lab/packages/labtool")
        assert response is not None and response.status == 404
        assert "secret-lab" not in page.locator("main").inner_text()
        page.goto(f"{base}/channels/science/packages/zlib")
        assert "zlib-tools" in page.locator("#dependants").inner_text()  # from the dependency index
        assert "labtool" not in page.content()  # not even as a dependant

        phone = browser.new_context(viewport=PHONE, is_mobile=True)
        p2 = phone.new_page()
        for path, name in (
            ("/channels/science/packages/zlib", "package-phone"),
            ("/search?q=zlib", "search-phone"),
            ("/cves/CVE-2022-37434", None),
            ("/channels/science", None),
            ("/", None),
        ):
            p2.goto(base + path)
            width = p2.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"] + 1, (path, width)  # no sideways scrolling of the page
            if name:
                shot(p2, name)
        phone.close()
        ctx.close()
        assert not errors, errors
