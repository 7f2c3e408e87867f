"""The sweep's HTML report as a reader sees it, in headless Chromium (conftest's ``browser``): from
``report/index.html`` every link leads to a page that loads (or to an element of it), and every figure
on the analysis and trial pages renders."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

# What a page holds once loaded; Chromium's own error page (a missing file) has #main-frame-error.
READ_PAGE = """return {url: location.href, error: !!document.getElementById('main-frame-error'),
  links: Array.from(document.links, a => a.href),
  ids: Array.from(document.querySelectorAll('[id]'), e => e.id),
  images: Array.from(document.images, i => ({src: i.src.slice(0, 40), width: i.naturalWidth}))}"""


@pytest.fixture(scope="module")
def report_pages(sweep, browser) -> dict[str, dict]:
    """Every page reachable from index.html through its links, as Chromium loaded it, by URL."""
    _, outputs = sweep
    todo, pages = [outputs["report"].as_uri()], {}
    while todo:
        url = todo.pop()
        if url not in pages:
            browser.get(url)
            pages[url] = browser.execute_script(READ_PAGE)
            todo += [link.partition("#")[0] for link in pages[url]["links"]
                     if link.startswith("file:") and link.partition("#")[0].endswith(".html")]
    return pages


def test_every_link_in_the_report_loads(sweep, report_pages):
    result, outputs = sweep
    report = outputs["report"].parent
    expected = {report / "analysis.html", *(report / "trials" / f"{t.name}.html" for t in result.trials)}
    assert {p.as_uri() for p in expected} <= set(report_pages)  # the analysis and every trial are linked
    for url, page in report_pages.items():
        assert page["url"] == url and not page["error"], f"{url} does not load"
        for link in page["links"]:
            target, _, fragment = link.partition("#")
            assert target.startswith("file:"), f"{url} links off this machine: {link}"
            if not target.endswith(".html"):  # a file (a checkpoint, a notebook): the browser downloads it
                assert Path(unquote(urlparse(target).path)).is_file(), f"{url}: {link} is not there"
                continue
            assert not fragment or unquote(fragment) in report_pages[target]["ids"], f"{url}: {link} has no target"


def test_every_figure_renders(sweep, report_pages):
    result, _ = sweep
    figures = {}
    for url, page in report_pages.items():
        figures[url.rsplit("/", 1)[-1]] = len(page["images"])
        for image in page["images"]:
            assert image["width"] > 0, f"{url}: {image['src']}... does not render"
    assert figures["analysis.html"] >= 2  # parameters and learning curves
    for trial in result.trials:
        assert figures[f"{trial.name}.html"] >= 3  # curves, CMC, ranked gallery
