"""`response.xpath()`: parsel selectors beside `css()`, and links from them to follow."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from conftest import ROOT

from scraper import Spider
from scraper.testing import make_response, run_spider

HTML = {"Content-Type": "text/html; charset=utf-8"}


def page(title: str, links: str = "", body: str = "") -> tuple[int, dict[str, str], str]:
    return 200, HTML, (f"<html><head><title>{title}</title></head><body>"
                       f"<h1>{title}</h1><nav>{links}</nav>{body}</body></html>")


SITE = {
    "/": page("Home", '<a href="/list/1">list</a> <a href="mailto:x@example.com">mail</a>'
                      ' <a href="javascript:void(0)">js</a>'),
    "/list/1": page("List 1", '<a class="next" href="/list/2">next</a>',
                    '<ul><li><a href="../item/1">One</a></li>'
                    '<li><a href="../item/2">Two</a></li></ul>'),
    "/list/2": page("List 2", "", '<ul><li><a href="/item/3">Three</a></li></ul>'),
    **{f"/item/{n}": page(f"Item {n}", "", f'<p class="price">{n}.50 EUR</p>'
                          '<span class="tag">new</span><span class="tag">sale</span>')
       for n in (1, 2, 3)},
}


class XPathCatalogue(Spider):
    """Every selection by XPath: links as `@href` strings, as `<a>` elements, and by
    `follow_all(xpath=...)`."""

    name = "xpath_catalogue"
    start_urls = ["http://127.0.0.1:1/"]

    def parse(self, response: Any) -> Any:
        yield from response.follow_all(response.xpath("//nav/a/@href"), self.parse_list)

    def parse_list(self, response: Any) -> Any:
        for link in response.xpath("//ul/li/a"):  # elements: follow() takes their href
            yield response.follow(link, self.parse_item,
                                  meta={"label": link.xpath("text()").get()})
        yield from response.follow_all(xpath="//a[@class='next']", callback=self.parse_list)

    def parse_item(self, response: Any) -> Any:
        yield {
            "url": response.url,
            "label": response.meta["label"],
            "title": response.xpath("//h1/text()").get(),
            "price": response.xpath("//p[@class='price']/text()").re_first(r"[\d.]+"),
            "tags": response.xpath("//span[@class='tag']/text()").getall(),
            "missing": response.xpath("//table").get(),
        }


def test_a_spider_using_only_xpath_crawls_the_site() -> None:
    result = run_spider(XPathCatalogue, SITE, {"crawl.obey_robots": False})
    assert result.exit_code == 0
    items = sorted(result.items, key=lambda item: item["title"])
    assert [item["title"] for item in items] == ["Item 1", "Item 2", "Item 3"]
    assert [item["label"] for item in items] == ["One", "Two", "Three"]
    assert [item["price"] for item in items] == ["1.50", "2.50", "3.50"]
    assert items[0]["tags"] == ["new", "sale"] and items[0]["missing"] is None
    assert items[0]["url"].endswith("/item/1")  # ../item/1 joined against /list/1
    assert result.stats["pages"] == 6  # mailto: and javascript: links were skipped
    assert result.stats["failed"] == 0


def test_xpath_results_get_getall_and_iterate() -> None:
    response = make_response('<div><a href="/a">A</a><a href="b">B</a></div>',
                             url="http://h/dir/page")
    hrefs = response.xpath("//a/@href")
    assert hrefs.get() == "/a" and hrefs.getall() == ["/a", "b"]
    assert [node.get() for node in hrefs] == ["/a", "b"]
    assert response.xpath("//nothing").get() is None
    assert response.xpath("//nothing").getall() == []
    assert response.xpath("//a[@href=$h]/text()", h="b").get() == "B"  # variables
    assert [r.url for r in response.follow_all(hrefs)] == ["http://h/a", "http://h/dir/b"]
    first = response.xpath("//a")[0]
    assert response.follow(first).url == "http://h/a"
    assert response.follow(response.xpath("//a/@href")[1]).url == "http://h/dir/b"


def test_css_and_xpath_agree_on_one_page() -> None:
    response = make_response("<ul><li>1</li><li>2</li></ul>")
    assert [node.text() for node in response.css("li")] == \
        response.xpath("//li/text()").getall() == ["1", "2"]


def test_follow_all_wants_one_way_of_selecting() -> None:
    response = make_response("<a href='x'>x</a>")
    with pytest.raises(TypeError, match="not both"):
        response.follow_all("a", xpath="//a")
    with pytest.raises(TypeError, match="xpath="):
        response.follow_all()


def test_xpath_decodes_a_declared_legacy_encoding() -> None:
    body = "<p>café</p>".encode("cp1252")
    response = make_response(body, headers={"Content-Type": "text/html; charset=cp1252"})
    assert response.xpath("//p/text()").get() == "café"


def test_parsel_is_imported_only_when_xpath_is_first_used() -> None:
    code = ("import sys\nfrom scraper.testing import make_response\n"
            "r = make_response('<p>x</p>')\nr.css('p')\nbefore = 'parsel' in sys.modules\n"
            "r.xpath('//p')\nprint(before, 'parsel' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout.split() == ["False", "True"]
