#!/usr/bin/env python3
"""Checks every link in the built book (docs/book) and in README.md.

A relative link must name a file that exists, and its #fragment an id in that file;
an image must exist. Links to other sites are not fetched (CI has no internet).
Prints each broken link as `file: link: what is wrong` and exits 1 when there is one.
"""
import html.parser
import os
import re
import sys
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOK = os.path.join(ROOT, "docs", "book")
SKIP_PAGES = {"print.html", "404.html", "toc.html"}


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag in ("a", "link") and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("img", "script") and attrs.get("src"):
            self.links.append(attrs["src"])


pages = {}


def page(path):
    if path not in pages:
        parser = Page()
        with open(path, encoding="utf-8") as f:
            parser.feed(f.read())
        pages[path] = parser
    return pages[path]


def external(link):
    return re.match(r"^[a-z][a-z0-9+.-]*:", link) is not None or link.startswith("//")


def check(source, base_dir, link, problems, md_to_html=False):
    if external(link):
        return
    parsed = urllib.parse.urlparse(link)
    target = urllib.parse.unquote(parsed.path)
    path = os.path.normpath(os.path.join(base_dir, target)) if target else source
    if md_to_html and path.startswith(os.path.join(ROOT, "docs", "src") + os.sep) and path.endswith(".md"):
        rel = os.path.relpath(path, os.path.join(ROOT, "docs", "src"))[: -len(".md")]
        rel = rel[: -len("README")] + "index" if os.path.basename(rel) == "README" else rel
        path = os.path.join(BOOK, rel + ".html")
    if os.path.isdir(path):
        path = os.path.join(path, "index.html")
    if not os.path.exists(path):
        problems.append(f"{os.path.relpath(source, ROOT)}: {link}: no such file")
        return
    if parsed.fragment and path.endswith(".html"):
        if urllib.parse.unquote(parsed.fragment) not in page(path).ids:
            problems.append(f"{os.path.relpath(source, ROOT)}: {link}: no such anchor in {os.path.relpath(path, ROOT)}")


def main():
    if not os.path.isdir(BOOK):
        sys.exit("docs/book does not exist: build the book first (scripts/book.sh)")
    problems, count = [], 0
    for dirpath, _, files in os.walk(BOOK):
        for name in files:
            if not name.endswith(".html") or (dirpath == BOOK and name in SKIP_PAGES):
                continue
            source = os.path.join(dirpath, name)
            for link in page(source).links:
                count += 1
                check(source, dirpath, link, problems)
    readme = os.path.join(ROOT, "README.md")
    with open(readme, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        count += 1
        if link.startswith("#"):
            continue  # README's own headings: GitHub's anchors, not checked here
        check(readme, ROOT, link, problems, md_to_html=True)
    for problem in problems:
        print(problem)
    print(f"{count} links checked, {len(problems)} broken")
    sys.exit(1 if problems else 0)


main()
