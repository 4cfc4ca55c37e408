#!/usr/bin/env python3
"""Fail on a broken internal link in README.md, docs/ and the built mdBook site.

Markdown pass (README.md and every page under docs/):
  * a relative link must name a file or directory that exists in the repository
    (links from docs/ into the repository, e.g. ../examples/keycloak.toml, included);
  * a #fragment on a Markdown target must match a heading id (mdBook's rule) or an
    explicit id="..." / name="..." in that page;
  * every page under docs/ must be listed in docs/SUMMARY.md, or mdBook never renders it.
HTML pass (the built book, default target/book, when it exists):
  * every relative href/src that stays inside the book must name an existing file, and
    its #fragment an id in that file: this catches links mdBook rewrites to a page it
    did not produce.
External links (http:, https:, mailto:, ...) are not fetched: CI has no network.

Usage: python3 .ci/check_links.py [--book DIR] [--no-html]
"""

import html
import os
import re
import sys
from urllib.parse import unquote

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DOCS = os.path.join(ROOT, "docs")

SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the target may be wrapped in <>.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ATTR = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
HTML_ID = re.compile(r"""\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.I)
ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")


def normalize_id(text):
    """mdBook 0.4's id for a heading: tags and entities dropped, then only
    alphanumerics, '_' and '-' kept, whitespace turned into '-', lowercased."""
    text = re.sub(r"<.*?>", "", text)
    for entity in ("&lt;", "&gt;", "&amp;", "&#39;", "&quot;"):
        text = text.replace(entity, "")
    text = text.strip().lstrip("#").strip()
    out = []
    for ch in text:
        if ch.isalnum() or ch in "_-":
            out.append(ch.lower())
        elif ch.isspace():
            out.append("-")
    return "".join(out)


def heading_text(md):
    """The text mdBook renders for a heading's Markdown: code spans keep their
    content, links keep their text, emphasis markers go; & < > " ' become
    entities, which normalize_id then drops."""
    md = INLINE_CODE.sub(lambda m: m.group(2), md)
    md = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", md)
    md = re.sub(r"(\*+)(.+?)\1", r"\2", md)
    md = md.replace("\\", "")
    return html.escape(md, quote=True).replace("&#x27;", "&#39;")


def markdown_lines(path):
    """(line number, text, in_code) for each line, code fences marked."""
    fence = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            m = FENCE.match(line)
            if fence is None and m:
                fence = m.group(1)[0] * 3
                yield n, line, True
                continue
            if fence is not None:
                if line.strip().startswith(fence):
                    fence = None
                yield n, line, True
                continue
            yield n, line, False


def anchors_of_markdown(path, cache={}):
    if path in cache:
        return cache[path]
    ids, seen = set(), {}
    prev = None
    for _, line, code in markdown_lines(path):
        if code:
            prev = None
            continue
        for m in HTML_ID.finditer(line):
            ids.add(m.group(1))
        text = None
        m = ATX.match(line)
        if m:
            text = m.group(2)
        elif prev and SETEXT.match(line) and "|" not in prev and not prev.lstrip().startswith(("-", "*", ">")):
            text = prev.strip()
        if text is not None:
            base = normalize_id(heading_text(text))
            # mdBook makes repeated ids unique with -1, -2, ...
            if base in seen:
                seen[base] += 1
                ids.add(f"{base}-{seen[base]}")
            else:
                seen[base] = 0
                ids.add(base)
        prev = line if line.strip() else None
    cache[path] = ids
    return ids


def links_in_markdown(path):
    for n, line, code in markdown_lines(path):
        if code:
            continue
        # Text inside code spans is not a link.
        plain = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)
        targets = [m.group(1) for m in INLINE_LINK.finditer(plain)]
        m = REF_DEF.match(plain)
        if m:
            targets.append(m.group(1))
        targets += [m.group(1) for m in HTML_ATTR.finditer(plain)]
        for t in targets:
            if t.startswith("<") and t.endswith(">"):
                t = t[1:-1]
            yield n, t


def rel(path):
    return os.path.relpath(path, ROOT)


def check_markdown(files):
    problems = []
    for src in files:
        for n, target in links_in_markdown(src):
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue
            path_part, _, frag = target.partition("#")
            path_part = unquote(path_part.split("?", 1)[0])
            if path_part.startswith("/"):
                problems.append(f"{rel(src)}:{n}: {target}: absolute path; use a relative link")
                continue
            dest = os.path.normpath(os.path.join(os.path.dirname(src), path_part)) if path_part else src
            if not (dest == ROOT or dest.startswith(ROOT + os.sep)):
                problems.append(f"{rel(src)}:{n}: {target}: points outside the repository")
                continue
            if not os.path.exists(dest):
                problems.append(f"{rel(src)}:{n}: {target}: no such file {rel(dest)}")
                continue
            if frag and dest.endswith(".md") and os.path.isfile(dest):
                if unquote(frag) not in anchors_of_markdown(dest):
                    problems.append(f"{rel(src)}:{n}: {target}: no heading or id '#{frag}' in {rel(dest)}")
    return problems


def check_summary():
    summary = os.path.join(DOCS, "SUMMARY.md")
    listed = set()
    for _, target in links_in_markdown(summary):
        listed.add(os.path.normpath(os.path.join(DOCS, unquote(target.partition("#")[0]))))
    problems = []
    for dirpath, _, names in os.walk(DOCS):
        for name in names:
            path = os.path.join(dirpath, name)
            if name.endswith(".md") and path != summary and path not in listed:
                problems.append(f"{rel(path)}: not listed in docs/SUMMARY.md (mdBook would not render it)")
    return problems


def check_html(book):
    ids_cache = {}

    def ids_of(path):
        if path not in ids_cache:
            with open(path, encoding="utf-8", errors="replace") as f:
                ids_cache[path] = set(HTML_ID.findall(f.read()))
        return ids_cache[path]

    problems = []
    for dirpath, _, names in os.walk(book):
        for name in names:
            # print.html repeats every page with rewritten links; 404.html uses
            # the site's absolute base. Both are mdBook's own and checked upstream.
            if not name.endswith(".html") or name in ("print.html", "404.html"):
                continue
            src = os.path.join(dirpath, name)
            with open(src, encoding="utf-8", errors="replace") as f:
                text = f.read()
            for target in HTML_ATTR.findall(text):
                target = html.unescape(target)
                if not target or SCHEME.match(target) or target.startswith("//"):
                    continue
                path_part, _, frag = target.partition("#")
                path_part = unquote(path_part.split("?", 1)[0])
                dest = os.path.normpath(os.path.join(dirpath, path_part)) if path_part else src
                if not dest.startswith(book + os.sep):
                    continue  # a link into the repository: the Markdown pass checked it
                if os.path.isdir(dest):
                    dest = os.path.join(dest, "index.html")
                where = os.path.relpath(src, book)
                if not os.path.exists(dest):
                    problems.append(f"{book_rel(book)}/{where}: {target}: no such page in the book")
                elif frag and dest.endswith(".html") and unquote(frag) not in ids_of(dest):
                    problems.append(f"{book_rel(book)}/{where}: {target}: no id '#{frag}'")
    return problems


def book_rel(book):
    return os.path.relpath(book, ROOT)


def main(argv):
    book = os.path.join(ROOT, "target", "book")
    html_pass = True
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--book":
            book = os.path.abspath(args.pop(0))
        elif a == "--no-html":
            html_pass = False
        else:
            print(__doc__, file=sys.stderr)
            return 2
    files = [os.path.join(ROOT, "README.md")]
    for dirpath, _, names in os.walk(DOCS):
        files += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".md")]
    problems = check_markdown(files) + check_summary()
    if html_pass:
        if os.path.isdir(book):
            problems += check_html(os.path.abspath(book))
        else:
            problems.append(f"{book_rel(book)}: no built book (run `mdbook build` first, or pass --no-html)")
    for p in problems:
        print(p)
    print(f"links: {len(files)} Markdown files checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
