"""`Response`: what a callback receives. The one module that knows selectolax and parsel.

CSS selectors run on selectolax (lexbor), the fast path; `xpath()` on parsel (lxml),
imported and parsed only when a callback first asks for XPath. Each tree is built lazily
on first use, so a callback that only reads `json()` or `body` pays no parsing cost.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import charset_normalizer
from selectolax.lexbor import LexborHTMLParser, LexborNode

from . import forms
from .errors import FormError
from .request import Callback, Request
from .urls import BadURL, join, resolve

if TYPE_CHECKING:
    from parsel import Selector, SelectorList

Node = LexborNode
Link: TypeAlias = "str | Node | Selector"  # what follow() and follow_all() take

_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.IGNORECASE)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([\w.:-]+)""", re.IGNORECASE)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_SKIP_SCHEMES = ("javascript:", "mailto:", "data:", "tel:", "#")
_BASE_TAG = re.compile(rb"<base[\s/>]", re.IGNORECASE)
_SKIP_FIRST = frozenset("jJmMdDtT#")  # the first characters of _SKIP_SCHEMES
_URL_SPACE = "".join(map(chr, range(0x21)))  # what the URL parser strips: C0 and space


def _known_codec(name: str | bytes | None) -> str | None:
    if not name:
        return None
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


# Encodings a web page may use (the WHATWG Encoding Standard's legacy single- and
# multi-byte ones); a detector's guess outside them (hp_roman8, mac_latin2...) is noise.
_WEB_ENCODINGS = frozenset(
    _known_codec(name) for name in (
        "cp1250", "cp1251", "cp1252", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257",
        "cp1258", "iso8859-2", "iso8859-4", "iso8859-5", "iso8859-6", "iso8859-7",
        "iso8859-8", "iso8859-13", "iso8859-15", "koi8-r", "koi8-u", "cp874", "shift_jis",
        "euc_jp", "iso2022_jp", "gb18030", "gbk", "big5", "euc_kr", "utf-16",
    )
)


def _detect(sample: bytes) -> str:
    """charset-normalizer's best web encoding for bytes that are not UTF-8; else cp1252,
    which is what browsers assume for undeclared Western pages."""
    for match in charset_normalizer.from_bytes(sample):
        name = _known_codec(match.encoding)
        if name is not None and name in _WEB_ENCODINGS:
            return name
    return "cp1252"


class Response:
    """A fetched page: `url`, `status`, `headers`, `body`, `text`, and selectors.

    `encoding`, `text` and the parsed tree are computed on first use and kept. Not with
    `functools.cached_property`: before Python 3.12 it takes one lock per property shared
    by every instance, which made all worker threads queue behind one page's parse.
    """

    __slots__ = ("_base_url", "_encoding", "_selector_cache", "_text", "_tree_cache", "body",
                 "headers", "request", "session", "status", "url")

    def __init__(self, url: str, status: int, headers: Mapping[str, str], body: bytes,
                 request: Request) -> None:
        self.url = url
        self.status = status
        self.headers = headers
        self.body = body
        self.request = request
        self._encoding: str | None = None
        self._text: str | None = None
        self._tree_cache: LexborHTMLParser | None = None
        self._selector_cache: Selector | None = None
        self._base_url: str | None = None
        # The session that fetched the page (`.name`, `.retire()`, `.cookies`), set by the
        # cookies component; None when it is off.
        self.session: Any = None

    @property
    def meta(self) -> dict[str, Any]:
        return self.request.meta

    @property
    def depth(self) -> int:
        return self.request.depth

    @property
    def encoding(self) -> str:
        """From a BOM, the Content-Type header, `<meta charset>`; else UTF-8 when the body
        is valid UTF-8; else what charset-normalizer detects (cp1252 as a last resort)."""
        if self._encoding is None:
            self._encoding = self._find_encoding()
        return self._encoding

    def _find_encoding(self) -> str:
        for bom, name in _BOMS:
            if self.body.startswith(bom):
                return name
        header = _HEADER_CHARSET.search(self.headers.get("content-type", ""))
        found = _known_codec(header.group(1)) if header else None
        if found:
            return found
        meta = _META_CHARSET.search(self.body[:4096])
        found = _known_codec(meta.group(1) if meta else None)
        if found:
            return found
        try:
            self.body.decode("utf-8")
        except UnicodeDecodeError:
            return _detect(self.body[:65536])
        return "utf-8"

    @property
    def text(self) -> str:
        """The body decoded; invalid bytes become U+FFFD rather than an error."""
        if self._text is None:
            self._text = self.body.decode(self.encoding, errors="replace")
        return self._text

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def _tree(self) -> LexborHTMLParser:
        tree = self._tree_cache
        if tree is None:
            if self.encoding == "utf-8" and not self.body.startswith(codecs.BOM_UTF8):
                tree = LexborHTMLParser(self.body)
            else:
                tree = LexborHTMLParser(self.text)
            self._tree_cache = tree
        return tree

    def css(self, selector: str) -> list[Node]:
        return self._tree.css(selector)

    def css_first(self, selector: str) -> Node | None:
        return self._tree.css_first(selector)

    def xpath(self, query: str, **variables: Any) -> SelectorList[Selector]:
        """The nodes an XPath 1.0 expression selects, as a parsel `SelectorList`:
        `.get()` (the first, as text; None when nothing matched), `.getall()`, iteration,
        `.attrib`, `.re()`, and further `.xpath()`/`.css()` on each node. `$name`
        variables in the expression take their values from keyword arguments.

        `response.xpath("//a/@href")` and `response.xpath("//a")` both go to `follow_all`.
        """
        selector = self._selector_cache
        if selector is None:
            from parsel import Selector

            selector = Selector(text=self.text, type="html", base_url=self.url)
            self._selector_cache = selector
        return selector.xpath(query, **variables)

    @property
    def base_url(self) -> str:
        """What relative links resolve against: the first `<base href>`, resolved against
        the page URL, as browsers do; the page URL when there is none (or when it is not a
        valid URL, or a `data:`/`javascript:` one)."""
        if self._base_url is None:
            self._base_url = self._find_base_url()
        return self._base_url

    def _find_base_url(self) -> str:
        if _BASE_TAG.search(self.body) is None:
            return self.url  # no <base> tag: no tree to build or search
        node = self._tree.css_first("base[href]")
        if node is None:
            return self.url
        try:
            base = join(self.url, node.attributes.get("href") or "")
        except BadURL:
            return self.url
        return self.url if base.startswith(("data:", "javascript:")) else base

    def urljoin(self, href: str) -> str:
        """`href` made absolute against this page's base URL (`base_url`) as a browser
        does; unchanged when no URL results (the scheduler then skips it as a bad URL)."""
        try:
            return join(self.base_url, href)
        except BadURL:
            return href

    def follow(self, href: Link, callback: Callback | None = None,
               **kwargs: Any) -> Request:
        """A Request for a link: a URL (relative or absolute), an `<a>`/`<img>` node from
        `css()` or `xpath()`, or an attribute `xpath()` selected (`//a/@href`)."""
        return Request(self.urljoin(_href(href)), callback, **kwargs)

    def follow_all(self, css_or_urls: str | Iterable[Link] | None = None,
                   callback: Callback | None = None, *, xpath: str | None = None,
                   **kwargs: Any) -> list[Request]:
        """Requests for every link a CSS selector matches, or an XPath expression
        (`xpath="//a/@href"`), or for an iterable of links (URLs, nodes, or what
        `xpath()` returned).

        Links resolve against `base_url` (so `<base href>` counts) and come out canonical
        (`scraper.urls.resolve`: fragment dropped, one spelling per page). Links that
        cannot be fetched (`javascript:`, `mailto:`, `data:`, bare fragments, empty) are
        skipped.
        """
        if xpath is not None:
            if css_or_urls is not None:
                raise TypeError("follow_all: give a CSS selector or xpath=, not both")
            items: Iterable[Link] = self.xpath(xpath)
        elif isinstance(css_or_urls, str):
            items = self.css(css_or_urls)
        elif css_or_urls is None:
            raise TypeError("follow_all: give a CSS selector, xpath= or links")
        else:
            items = css_or_urls
        base = self.base_url
        requests = []
        make = Request._link if not kwargs else None  # the common case, without checks
        for item in items:
            if type(item) is LexborNode:  # what css() returns: its attributes read inline
                attributes = item.attributes
                href = attributes.get("href") or attributes.get("src") or ""
            else:
                href = item if isinstance(item, str) else _href(item)
            if href[:1] <= " " or href[-1:] <= " ":
                href = href.strip(_URL_SPACE)
                if not href:
                    continue
            if href[0] in _SKIP_FIRST and href.lower().startswith(_SKIP_SCHEMES):
                continue
            try:
                url = resolve(base, href)
            except BadURL:
                url = href  # the scheduler counts it as filtered_bad_url
            requests.append(make(url, callback) if make is not None
                            else Request(url, callback, **kwargs))
        return requests

    def form(self, selector: str | Node | None = None, data: Mapping[str, Any] | None = None,
             submit: str | bool | None = None, callback: Callback | None = None,
             **kwargs: Any) -> Request:
        """The Request a browser sends when the form is submitted (see `scraper.forms`).

        `selector`: a CSS selector for the form, or for an element inside it (default:
        the page's first form); `data`: fields to set, `{name: value}` (a list for several
        values, None to leave a field out, `(filename, content)` for a file); `submit`: a
        CSS selector for the button clicked (default: the first submit button; False: no
        button). Other keyword arguments go to `Request` (`meta`, `cb_kwargs`,
        `session`, `headers`, ...). Hidden fields (CSRF tokens) are kept; the method,
        encoding (urlencoded, multipart) and action URL are the form's. FormError when
        there is no such form or button.
        """
        form = self._find_form(selector)
        tree = self._tree
        forms_by_id = {node.attributes["id"]: node for node in tree.css("form[id]")
                       if node.attributes.get("id")}
        fields = [node for node in tree.css(forms.FIELD_TAGS)
                  if forms.owner_form(node, forms_by_id) == form]
        chosen: Any = submit
        if isinstance(submit, str):
            matched = tree.css(submit)
            chosen = (submit, lambda node: node in matched)
        elif submit is True:
            chosen = None
        sent = forms.submission(form, fields, page_url=self.url, encoding=self.encoding,
                                urljoin=self.urljoin, data=data, submit=chosen)
        headers = dict(kwargs.pop("headers", None) or {})
        if sent.content_type and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = sent.content_type
        return Request(sent.url, callback, method=sent.method, headers=headers or None,
                       body=sent.body, **kwargs)

    def _find_form(self, selector: str | Node | None) -> Node:
        if selector is None:
            found = self.css_first("form")
            if found is None:
                raise FormError(f"no <form> on {self.url}")
            return found
        node = self.css_first(selector) if isinstance(selector, str) else selector
        if node is None:
            raise FormError(f"no element matches {selector!r} on {self.url}")
        while node is not None and node.tag != "form":
            node = node.parent
        if node is None:
            raise FormError(f"{selector!r} is not a <form> nor inside one, on {self.url}")
        return node

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url}>"


def _href(link: Link) -> str:
    """The URL in a link: itself, an element's href (or src), an attribute's value."""
    if isinstance(link, str):
        return link
    if isinstance(link, LexborNode):
        attributes: Mapping[str, str | None] = link.attributes
    else:  # a parsel Selector: an attribute or text (its root is a str), or an element
        root = link.root
        if isinstance(root, str):
            return root
        attributes = link.attrib
    return attributes.get("href") or attributes.get("src") or ""
