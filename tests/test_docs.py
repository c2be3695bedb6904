"""The README and docs/ stay short, linked and free of work-log talk (pure Python: no torch, no model)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 14 * 1024
# the external reference file's name, built so that this file does not contain it
REFERENCE_NAME = "TFLOW" + ".md"

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
ISSUE = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)
HASH_NUMBER = re.compile(r"(?<![\w/#&])#\d+\b")


def _relative_targets(text: str) -> list[str]:
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http(s)://, mailto: and the like; anchors within the page
        targets.append(target.split("#", 1)[0])
    return targets


def _without_links(text: str) -> str:
    """The text with link targets and inline URLs removed, so '#12' in an anchor or a URL is not read as an issue."""
    text = LINK.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + ")", text)
    return re.sub(r"https?://\S+", "", text)


def test_the_readme_is_at_most_14_kb():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes (limit {README_LIMIT})"


def test_every_relative_link_in_the_readme_and_docs_resolves_to_a_file():
    broken = []
    for page in PAGES:
        for target in _relative_targets(page.read_text(encoding="utf-8")):
            path = (page.parent / target).resolve()
            if not (path.is_file() and path.is_relative_to(ROOT)):
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_sees_links_images_and_skips_urls_and_anchors():
    text = "[a](docs/x.md#part) ![b](assets/y.png) [c](https://example.org/#1) [d](#local)"
    assert _relative_targets(text) == ["docs/x.md", "assets/y.png"]


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = []
    for name in out.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and path.resolve() != Path(__file__).resolve():
            paths.append(path)
    return paths


def test_no_tracked_file_mentions_the_external_reference_file():
    offenders = []
    for path in _tracked_text_files():
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        if REFERENCE_NAME.lower() in data.decode("utf-8", errors="replace").lower():
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"{REFERENCE_NAME} is named in: {', '.join(offenders)} (point at docs/method.md instead)"


def test_readme_and_docs_read_as_reference_pages_not_as_a_work_log():
    found = []
    for page in PAGES:
        text = _without_links(page.read_text(encoding="utf-8"))
        for n, line in enumerate(text.splitlines(), 1):
            hits = ISSUE.findall(line) + HASH_NUMBER.findall(line)
            if re.search(r"\bthis stop\b", line, re.IGNORECASE):
                hits.append("this stop")
            found += [f"{page.relative_to(ROOT)}:{n}: {h!r}" for h in hits]
    assert not found, "work-log references:\n" + "\n".join(found)


def test_the_work_log_check_catches_issue_numbers_but_not_urls_or_anchors():
    def hits(line: str) -> list[str]:
        line = _without_links(line)
        return ISSUE.findall(line) + HASH_NUMBER.findall(line)

    assert hits("fixed in issue 19") and hits("see Issues #7") and hits("as #12 asked")
    assert not hits("[perf](perf.md#section-2) and https://example.org/page#3 and &#8212;")
