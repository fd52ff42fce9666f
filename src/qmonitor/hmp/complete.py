"""TAB completion of a human command line, from the command table.

QEMU (``monitor_find_completion`` in ``monitor/hmp.c``) completes command names, ``info``
items and, through per-command hooks, a few values (snapshot tags for ``loadvm``, device ids).
Here every command gets the same, from its registration:

- the first word: command names and aliases; after ``info``: the ``info`` items; after
  ``help``: command names again (and ``info`` items after ``help info``);
- a word starting with ``-``: the command's flags not given yet;
- any other word: the values the command declares for that argument
  (``HumanSyntax.completers``), the members of an enum-typed parameter, ``on``/``off`` for a
  ``b`` argument; of an argument with a subword separator (``HumanSyntax.subword_separators``),
  only what follows its last separator is completed (``sendkey ctrl-al``).

:func:`complete` is pure: it returns the word being completed and the candidates (full words,
sorted); the console and the socket readline decide how to show them.
"""

from __future__ import annotations

from qmonitor.hmp.parse import split_words
from qmonitor.hmp.table import INFO, CommandTable, HumanEntry

_SPACES = " \t\n\v\f\r"
HELP = "help"


def _matching(word: str, candidates: list[str]) -> tuple[str, list[str]]:
    return word, sorted({c for c in candidates if c.startswith(word)})


def _argument_candidates(entry: HumanEntry, words: list[str]) -> tuple[str, list[str]]:
    """The part of the last of ``words`` (the words after the command name) being completed,
    and its candidates: all of it, or what follows the argument's subword separator."""
    current = words[-1]
    key, candidates = _argument_values(entry, words)
    separator = entry.subword_separators.get(key) if key is not None else None
    if separator is not None:
        current = current.rpartition(separator)[2]
    return _matching(current, candidates)


def _argument_values(entry: HumanEntry, words: list[str]) -> tuple[str | None, list[str]]:
    """The argument key the last of ``words`` is for (None for a flag or none) and the values
    it may take."""
    flags = {spec.flag: spec for spec in entry.args if spec.is_flag}
    positional = [spec for spec in entry.args if not spec.is_flag]
    given_flags: set[str] = set()
    position = 0
    index = 0
    while index < len(words) - 1:
        word = words[index]
        spec = flags.get(word[1:2]) if word.startswith("-") and len(word) == 2 else None
        if spec is not None:
            given_flags.add(spec.flag)
            index += 2 if spec.flag_takes_value else 1
            continue
        if position < len(positional) and positional[position].letter == "S":
            return None, []  # the rest of the line is one free-form argument
        position += 1
        index += 1
    if index > len(words) - 1:
        return None, []  # completing the value of a flag
    current = words[-1]
    if current.startswith("-") and (flags.keys() - given_flags):
        return None, [f"-{letter}" for letter in flags if letter not in given_flags]
    if position >= len(positional):
        return None, []
    spec = positional[position]
    completer = entry.completers.get(spec.key)
    if completer is not None:
        return spec.key, list(completer())
    if spec.letter == "b":
        return spec.key, ["on", "off"]
    return spec.key, []


def _complete_words(table: CommandTable, words: list[str]) -> tuple[str, list[str]]:
    entries = table.top
    if words[0] == INFO and len(words) > 1:
        entries, words = table.info, words[1:]
    if len(words) == 1:
        return _matching(words[0], list(entries))
    entry = entries.get(words[0])
    if entry is None:
        return words[-1], []
    if entries is table.top and HELP in entry.names:
        return _complete_words(table, words[1:])
    return _argument_candidates(entry, words[1:])


def complete(table: CommandTable, text: str) -> tuple[str, list[str]]:
    """Complete ``text`` (the line up to the cursor): (word being completed, candidates)."""
    words = split_words(text)
    if words is None:
        return "", []
    if not words or text[-1] in _SPACES:
        words.append("")
    return _complete_words(table, words)
