"""RESULTS.md as numbered sections: a run that measures some sections rewrites those and keeps the others."""

from __future__ import annotations

import re

HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)


def split_sections(text: str) -> tuple[str, dict[int, str]]:
    """The text before the first numbered section, and each ``## N.`` section's text by its number."""
    starts = list(HEADING.finditer(text))
    header = (text[: starts[0].start()] if starts else text).rstrip("\n")
    sections = {}
    for match, following in zip(starts, [*starts[1:], None]):
        end = following.start() if following else len(text)
        sections[int(match.group(1))] = text[match.start() : end].rstrip("\n")
    return header, sections


def merge(existing: str, fresh: str) -> str:
    """``fresh`` with every section it did not measure taken from ``existing``, in section order; the header
    says which sections are older than this run."""
    header, sections = split_sections(fresh)
    _, old = split_sections(existing)
    kept = sorted(set(old) - set(sections))
    if kept:
        which = f"Section {kept[0]} was" if len(kept) == 1 else f"Sections {', '.join(map(str, kept))} were"
        header += (f"\n\n{which} not measured in this run and kept from the previous file, with its own date and "
                   "conditions.")
    merged = {**{number: old[number] for number in kept}, **sections}
    return header + "\n\n" + "\n\n".join(merged[number] for number in sorted(merged)) + "\n"
