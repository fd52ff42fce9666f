"""The human monitor's own commands: ``help`` (alias ``?``) and ``info``.

They are human-only (``qmp=False``), as in QEMU, where they are table entries of
``hmp-commands.hx`` with the same ``params`` and ``help`` texts. ``info`` with a word after it
never reaches its handler: the parser looks the word up in the ``info`` sub-table.
"""

from __future__ import annotations

from qmonitor.core.commands import CommandRegistry, HumanSyntax
from qmonitor.hmp.render import help_text
from qmonitor.hmp.table import INFO, command_table

HELP_SYNTAX = HumanSyntax(
    name="help", aliases=("?",), args_type="name:S?", params="[cmd]", help="show the help"
)
INFO_SYNTAX = HumanSyntax(
    name=INFO,
    args_type="",
    params="[subcommand]",
    help="show various information about the system state",
)


def register_hmp_builtins(registry: CommandRegistry) -> None:
    """Add ``help`` and ``info`` to ``registry`` (once; later calls do nothing)."""
    if "help" in registry:
        return

    @registry.command(name="help", hmp=HELP_SYNTAX, qmp=False)
    def help_(name: str | None = None) -> str:
        """List the human monitor's commands, or show one (``help info`` lists info items)."""
        return help_text(command_table(registry), name)

    @registry.command(name=INFO, hmp=INFO_SYNTAX, qmp=False)
    def info() -> str:
        """List the ``info`` items (``info ITEM`` runs one)."""
        return help_text(command_table(registry), INFO)
