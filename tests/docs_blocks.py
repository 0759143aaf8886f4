"""The command blocks of the user docs, and the bash script that runs them as a reader would.

The docs' convention (README, "Development"): ```sh blocks run as written from the repository root, in
order; ```console blocks need what CI lacks or hold placeholders; ```text blocks are output.  Every fence
carries a language tag.

>>> blocks = fenced_blocks(["# T", "```sh", "a \\\\", "  b   # c", "", "# only a comment", "c &", "```"])
>>> [(b.lang, b.line, b.commands) for b in blocks]
[('sh', 2, ['a \\\\\\n  b   # c', 'c &'])]
>>> is_background("serve --events - &   # the service"), is_background("a && b")
(True, False)
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^\s*```(\S*)\s*$")
BACKGROUND = re.compile(r"(?<![&|>])&\s*(#.*)?$")
TRAILING_COMMENT = re.compile(r"\s+#[^'\"]*$")

#: commands the docs test does not run, with the reason it gives in its log
NOT_RUN = {
    "scripts/test.sh": "CI's own command: CI runs it, and this test inside it",
}


@dataclass
class Block:
    lang: str
    line: int  # the line of the opening fence, 1-based
    lines: list[str] = field(default_factory=list)

    @property
    def commands(self) -> list[str]:
        """The block's commands: continuation lines joined, blank and comment-only lines left out."""
        out: list[str] = []
        pending: list[str] = []
        for line in self.lines:
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending.append(line)
            if not line.rstrip().endswith("\\"):
                out.append("\n".join(pending))
                pending = []
        if pending:
            out.append("\n".join(pending))
        return out


def fenced_blocks(lines: list[str]) -> list[Block]:
    """Every fenced block of a Markdown document, in order (an untagged block has ``lang`` "")."""
    blocks: list[Block] = []
    current: Block | None = None
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if current is None and match:
            current = Block(match.group(1), number)
        elif current is not None and match and not match.group(1):
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    if current is not None:
        raise ValueError(f"block opened at line {current.line} is never closed")
    return blocks


def runnable_blocks(path: Path) -> list[Block]:
    return [b for b in fenced_blocks(path.read_text(encoding="utf-8").splitlines()) if b.lang == "sh"]


def without_comments(block: Block) -> tuple[str, ...]:
    """The block's commands with trailing comments dropped: what two copies of one path have in common."""
    return tuple(TRAILING_COMMENT.sub("", line) for command in block.commands for line in command.splitlines())


def repeated(documents: list[Path]) -> dict[tuple[Path, int], Path]:
    """(document, block index) -> the earlier document holding the same commands (the README's quick path
    repeated in a detailed page): the docs test runs such a block once, where it first appears."""
    first: dict[tuple[str, ...], Path] = {}
    out = {}
    for doc in documents:
        for i, block in enumerate(runnable_blocks(doc)):
            key = without_comments(block)
            if key in first and first[key] != doc:
                out[(doc, i)] = first[key]
            first.setdefault(key, doc)
    return out


def is_background(command: str) -> bool:
    return bool(BACKGROUND.search(command.rstrip()))


def not_run_reason(command: str) -> str | None:
    first = command.split()[0] if command.split() else ""
    return NOT_RUN.get(first)


PRELUDE = r"""
__bg_pids=()
__bg_steps=()
__note() { printf '%s\n' "$*" >> "$BASELINER_DOCS_STATUS"; }
__fail() { __note "fail $1 $2"; exit 97; }
__check_bg() {  # a background command that has ended with an error fails the document
  local i rc
  for i in "${!__bg_pids[@]}"; do
    if ! kill -0 "${__bg_pids[$i]}" 2>/dev/null; then
      wait "${__bg_pids[$i]}"; rc=$?
      [ "$rc" -eq 0 ] || __fail "${__bg_steps[$i]}" "$rc"
      unset "__bg_pids[$i]" "__bg_steps[$i]"
    fi
  done
}
trap __check_bg CHLD  # as soon as it happens: a server that dies while a later command waits for it
"""


def script(blocks: list[Block], settle_seconds: float, skip: dict[int, str] | None = None) -> str:
    """A bash script running every command of ``blocks`` in order in one shell, as a reader's terminal would.

    Blocks whose index is in ``skip`` are left out (with the reason given there).  It appends ``start B C``
    before block B's command C, ``fail B C STATUS`` when it (or, later, a command it
    sent to the background) fails, and ``done`` at the end, to the file ``$BASELINER_DOCS_STATUS``.
    """
    out = [PRELUDE]
    for b, block in enumerate(blocks):
        if skip and b in skip:
            out.append(f"__note {shlex.quote(f'skip {b} - {skip[b]}')}")
            continue
        for c, command in enumerate(block.commands):
            step = f"{b} {c}"
            reason = not_run_reason(command)
            if reason:
                out.append(f"__note {shlex.quote(f'skip {step} {reason}')}")
                continue
            out.append(f"__note 'start {step}'")
            out.append(command)
            if is_background(command):
                out.append(f"__bg_pids+=($!); __bg_steps+=('{step}')")
            else:
                out.append(f"__rc=$?; [ $__rc -eq 0 ] || __fail '{step}' $__rc")
        out.append("__check_bg")
    # a service sent to the background by the last block gets a moment to fail at start
    out.append(f'if [ "${{#__bg_pids[@]}}" -gt 0 ]; then sleep {settle_seconds}; __check_bg; fi')
    out.append("__note done")
    return "\n".join(out) + "\n"
