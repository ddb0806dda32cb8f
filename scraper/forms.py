"""HTML form submission as a browser performs it (the HTML standard's "constructing the
entry list" and "form submission" algorithms), for `Response.form()`.

It works on the parsed page's nodes, which `response.py` (the one module that knows the
parser) hands over; nodes are used through their `tag`, `attributes`, `text()`,
`parent` and `css()` only.

What is submitted, in document order: the form's fields that have a name and are not
disabled (by their own `disabled` or a disabled `<fieldset>`), fields outside the form
that name it (`form="id"`); checkboxes and radios only when checked (value "on" when they
have none); each selected option of a `<select>` (for a single-choice list with none
marked, its first enabled option, as browsers show it); textareas' text; file inputs as
empty files; the clicked submit button only (`submit`: the first one by default, as when
Enter is pressed; `submit=False` for none), with its `formaction`, `formmethod` and
`formenctype` overriding the form's. `data` then replaces fields by name, or adds them.
"""

from __future__ import annotations

import codecs
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from .errors import FormError

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
TEXT_PLAIN = "text/plain"
FIELD_TAGS = "input, button, select, textarea"
_SUBMIT_INPUTS = ("submit", "image")
_SKIPPED_INPUTS = ("reset", "button")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_SPACES = re.compile(r"[ \t\n\f\r]+")

# An entry's value: text, or a file as (filename, content, content type).
FileValue = tuple[str, bytes, str]
Entry = tuple[str, "str | FileValue"]


@dataclass
class Submission:
    """What a browser would send: method, URL, body and its Content-Type."""

    method: str
    url: str
    body: bytes | None
    content_type: str | None


def _attr(node: Any, name: str) -> str | None:
    value = node.attributes.get(name, "__absent__")
    if value == "__absent__":
        return None
    return value or ""


def _has(node: Any, name: str) -> bool:
    return name in node.attributes


def _input_type(node: Any) -> str:
    return (_attr(node, "type") or "text").strip().lower()


def is_submit_button(node: Any) -> bool:
    if node.tag == "button":
        return (_attr(node, "type") or "submit").strip().lower() == "submit"
    return node.tag == "input" and _input_type(node) in _SUBMIT_INPUTS


def _disabled(node: Any) -> bool:
    if _has(node, "disabled"):
        return True
    child, parent = node, node.parent
    while parent is not None and parent.tag not in ("form", "html", "-undef"):
        if parent.tag == "fieldset" and _has(parent, "disabled"):
            legend = parent.css_first("legend")
            first_legend = legend is not None and legend.parent == parent
            if not (first_legend and child == legend):
                return True
        if parent.tag == "datalist":
            return True
        child, parent = parent, parent.parent
    return False


def owner_form(node: Any, forms_by_id: Mapping[str, Any]) -> Any:
    """The form a field belongs to: the one its `form` attribute names, else its
    nearest `<form>` ancestor (None for neither)."""
    named = _attr(node, "form")
    if named is not None:
        return forms_by_id.get(named)
    parent = node.parent
    while parent is not None:
        if parent.tag == "form":
            return parent
        parent = parent.parent
    return None


def _option_value(option: Any) -> str:
    value = _attr(option, "value")
    if value is not None:
        return value
    return _SPACES.sub(" ", option.text(deep=True)).strip(" ")


def _select_values(select: Any) -> list[str]:
    options = [o for o in select.css("option")]
    enabled = [o for o in options if not _has(o, "disabled")
               and not (o.parent is not None and o.parent.tag == "optgroup"
                        and _has(o.parent, "disabled"))]
    chosen = [o for o in options if _has(o, "selected")]
    if _has(select, "multiple"):
        return [_option_value(o) for o in chosen if o in enabled]
    if chosen:
        last = chosen[-1]  # several marked in a single-choice list: browsers keep the last
        return [_option_value(last)] if last in enabled else []
    size = _attr(select, "size")
    if size is not None and size.strip().isdigit() and int(size) > 1:
        return []  # a list box shows no default choice
    return [_option_value(enabled[0])] if enabled else []


def entries(fields: Iterable[Any], submitter: Any, encoding: str) -> list[Entry]:
    """The entry list of a form's fields (in document order) with `submitter` clicked."""
    found: list[Entry] = []
    for node in fields:
        if _disabled(node):
            continue
        tag = node.tag
        name = _attr(node, "name")
        if tag == "input" and _input_type(node) == "image":
            if node == submitter:
                prefix = f"{name}." if name else ""
                found += [(f"{prefix}x", "0"), (f"{prefix}y", "0")]
            continue
        if not name:
            continue
        if is_submit_button(node) or tag == "button":
            if node == submitter:
                found.append((name, _attr(node, "value") or ""))
            continue
        if tag == "select":
            found += [(name, value) for value in _select_values(node)]
        elif tag == "textarea":
            found.append((name, node.text(deep=True)))
        else:
            kind = _input_type(node)
            if kind in _SKIPPED_INPUTS:
                continue
            if kind in ("checkbox", "radio"):
                if _has(node, "checked"):
                    found.append((name, _attr(node, "value") or "on"))
            elif kind == "file":
                found.append((name, ("", b"", "application/octet-stream")))
            elif kind == "hidden" and name.lower() == "_charset_" and not _attr(node, "value"):
                found.append((name, encoding))
            else:
                found.append((name, _attr(node, "value") or ""))
    return found


def _as_entries(name: str, value: Any) -> list[Entry]:
    if isinstance(value, tuple):  # a file: (filename, content[, content type])
        if len(value) not in (2, 3) or not isinstance(value[1], bytes | str):
            raise FormError(f"form data {name!r}: a file is (filename, content) or "
                            f"(filename, content, content_type), got {value!r}")
        content = value[1].encode("utf-8") if isinstance(value[1], str) else value[1]
        kind = value[2] if len(value) == 3 else "application/octet-stream"
        return [(name, (str(value[0]), content, kind))]
    if isinstance(value, list | set | frozenset):
        return [entry for item in value for entry in _as_entries(name, item)]
    if isinstance(value, bool):
        value = "on" if value else None
        return [(name, value)] if value else []
    return [(name, str(value))]


def apply_data(found: list[Entry], data: Mapping[str, Any] | None) -> list[Entry]:
    """`data` replaces the entries of each name it gives (at the first one's place) or
    adds them at the end; None removes a name."""
    if not data:
        return found
    result: list[Entry] = []
    placed: set[str] = set()
    for name, value in found:
        if name in data:
            if name not in placed:
                placed.add(name)
                if data[name] is not None:
                    result += _as_entries(name, data[name])
            continue
        result.append((name, value))
    for name, value in data.items():
        if name not in placed and value is not None:
            result += _as_entries(str(name), value)
    return result


def _normalise(text: str) -> str:
    return _NEWLINES.sub("\r\n", text)


def _text_pairs(found: Sequence[Entry]) -> list[tuple[str, str]]:
    return [(_normalise(name), _normalise(value if isinstance(value, str) else value[0]))
            for name, value in found]


def encode_multipart(found: Sequence[Entry], encoding: str) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type (with the boundary)."""
    boundary = "----scraperFormBoundary" + secrets.token_hex(12)

    def quoted(text: str) -> bytes:
        text = text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        return text.encode(encoding, "xmlcharrefreplace")

    parts: list[bytes] = []
    for name, value in found:
        parts.append(f"--{boundary}\r\n".encode("ascii"))
        disposition = b'Content-Disposition: form-data; name="' + quoted(name) + b'"'
        if isinstance(value, str):
            parts += [disposition, b"\r\n\r\n",
                      _normalise(value).encode(encoding, "xmlcharrefreplace"), b"\r\n"]
        else:
            filename, content, kind = value
            parts += [disposition, b'; filename="', quoted(filename), b'"\r\n',
                      f"Content-Type: {kind}\r\n\r\n".encode("latin-1"), content, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts), f"{MULTIPART}; boundary={boundary}"


def submission(form: Any, fields: Sequence[Any], *, page_url: str, encoding: str,
               urljoin: Callable[[str], str], data: Mapping[str, Any] | None,
               submit: Any) -> Submission:
    """What submitting `form` sends. `submit`: None (the first submit button), False
    (none), or (a description, a predicate choosing among the form's submit buttons)."""
    buttons = [node for node in fields if is_submit_button(node) and not _disabled(node)]
    submitter = None
    if submit is None:
        submitter = buttons[0] if buttons else None
    elif submit is not False:
        description, chosen = submit
        submitter = next((node for node in buttons if chosen(node)), None)
        if submitter is None:
            names = ", ".join(
                f"{node.tag} name={_attr(node, 'name')!r} value={_attr(node, 'value')!r}"
                for node in buttons) or "none"
            raise FormError(f"no submit button matches {description!r} in the form "
                            f"on {page_url} (its buttons: {names})")
    charset = _form_charset(form) or encoding

    def override(name: str) -> str | None:
        value = _attr(submitter, f"form{name}") if submitter is not None else None
        return value if value is not None else _attr(form, name)

    method = (override("method") or "get").strip().upper()
    method = "POST" if method == "POST" else "GET"
    action = (override("action") or "").strip()
    url = urljoin(action) if action else page_url
    enctype = (override("enctype") or URLENCODED).strip().lower()
    found = apply_data(entries(fields, submitter, charset), data)
    if method == "GET":
        query = urlencode(_text_pairs(found), encoding=charset, errors="xmlcharrefreplace")
        scheme, netloc, path, _, _ = urlsplit(url)
        return Submission("GET", urlunsplit((scheme, netloc, path, query, "")), None, None)
    if enctype == MULTIPART:
        body, content_type = encode_multipart(found, charset)
        return Submission("POST", url, body, content_type)
    if enctype == TEXT_PLAIN:
        text = "".join(f"{name}={value}\r\n" for name, value in _text_pairs(found))
        return Submission("POST", url, text.encode(charset, "xmlcharrefreplace"),
                          f"{TEXT_PLAIN}; charset={charset}")
    body = urlencode(_text_pairs(found), encoding=charset,
                     errors="xmlcharrefreplace").encode("ascii")
    return Submission("POST", url, body, URLENCODED)


def _form_charset(form: Any) -> str | None:
    for label in (_attr(form, "accept-charset") or "").replace(",", " ").split():
        try:
            return codecs.lookup(label).name
        except LookupError:
            continue
    return None
