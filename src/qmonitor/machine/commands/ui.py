"""Keyboard input and screen dumps: ``send-key`` and ``screendump`` (qapi/ui.json), HMP ``sendkey``
and ``screendump`` (hmp-commands.hx), as QEMU 7.2 has them.

libvirt's ``virsh send-key`` runs ``send-key``; ``virsh screenshot`` runs ``screendump`` (once it
has found a ``<video>`` device in the domain: without one libvirt itself refuses, "no screens to
take screenshot from", and never asks the emulator).

``send-key`` (ui/input-legacy.c ``qmp_send_key``) presses each key in order, holding each for
``hold-time`` ms (default 100 ms), then releases them in reverse order, through the input layer
to whatever keyboard the guest has. QEMU reports nothing back: a key no device takes, or one sent
while the guest is paused, is dropped without an error (ui/input.c ``qemu_input_event_send``).
The simulated guest has no keyboard driver, so the keys are taken and change nothing, as on QEMU
with a guest that reads no keyboard; the request and its keys are in the trace path
(``command.started``, an audit log's record) like every other.

``screendump`` (ui/console.c ``qmp_screendump``) looks up the console to dump, then writes the
image. The simulated machine has no display adapter, hence no console: the answer is QEMU's for
a machine without one (``-display none -nodefaults``), and nothing is written (QEMU opens the
file only once it has a console's surface). A ``device`` is looked up among the ``-device``
ids as ``qdev_find_recursive`` finds them; one that exists is not a display
(docs/STANDIN.md, "Keyboard and screen", for the configurations where QEMU would have one).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final

from qmonitor import ErrorClass, HumanSyntax, Monitor, QMPError, Variants
from qmonitor.machine.config import MachineConfig


class QKeyCode(StrEnum):
    """qapi/ui.json ``QKeyCode``: QEMU 7.2's key names, in its order (``query-qmp-schema`` of
    qemu-system-x86_64 7.2 lists the same 150; tests/test_keys_qemu.py compares them)."""

    UNMAPPED = "unmapped"
    SHIFT = "shift"
    SHIFT_R = "shift_r"
    ALT = "alt"
    ALT_R = "alt_r"
    CTRL = "ctrl"
    CTRL_R = "ctrl_r"
    MENU = "menu"
    ESC = "esc"
    KEY_1 = "1"
    KEY_2 = "2"
    KEY_3 = "3"
    KEY_4 = "4"
    KEY_5 = "5"
    KEY_6 = "6"
    KEY_7 = "7"
    KEY_8 = "8"
    KEY_9 = "9"
    KEY_0 = "0"
    MINUS = "minus"
    EQUAL = "equal"
    BACKSPACE = "backspace"
    TAB = "tab"
    Q = "q"
    W = "w"
    E = "e"
    R = "r"
    T = "t"
    Y = "y"
    U = "u"
    I = "i"  # noqa: E741  # the key's name, as every member
    O = "o"  # noqa: E741  # the key's name, as every member
    P = "p"
    BRACKET_LEFT = "bracket_left"
    BRACKET_RIGHT = "bracket_right"
    RET = "ret"
    A = "a"
    S = "s"
    D = "d"
    F = "f"
    G = "g"
    H = "h"
    J = "j"
    K = "k"
    L = "l"
    SEMICOLON = "semicolon"
    APOSTROPHE = "apostrophe"
    GRAVE_ACCENT = "grave_accent"
    BACKSLASH = "backslash"
    Z = "z"
    X = "x"
    C = "c"
    V = "v"
    B = "b"
    N = "n"
    M = "m"
    COMMA = "comma"
    DOT = "dot"
    SLASH = "slash"
    ASTERISK = "asterisk"
    SPC = "spc"
    CAPS_LOCK = "caps_lock"
    F1 = "f1"
    F2 = "f2"
    F3 = "f3"
    F4 = "f4"
    F5 = "f5"
    F6 = "f6"
    F7 = "f7"
    F8 = "f8"
    F9 = "f9"
    F10 = "f10"
    NUM_LOCK = "num_lock"
    SCROLL_LOCK = "scroll_lock"
    KP_DIVIDE = "kp_divide"
    KP_MULTIPLY = "kp_multiply"
    KP_SUBTRACT = "kp_subtract"
    KP_ADD = "kp_add"
    KP_ENTER = "kp_enter"
    KP_DECIMAL = "kp_decimal"
    SYSRQ = "sysrq"
    KP_0 = "kp_0"
    KP_1 = "kp_1"
    KP_2 = "kp_2"
    KP_3 = "kp_3"
    KP_4 = "kp_4"
    KP_5 = "kp_5"
    KP_6 = "kp_6"
    KP_7 = "kp_7"
    KP_8 = "kp_8"
    KP_9 = "kp_9"
    LESS = "less"
    F11 = "f11"
    F12 = "f12"
    PRINT = "print"
    HOME = "home"
    PGUP = "pgup"
    PGDN = "pgdn"
    END = "end"
    LEFT = "left"
    UP = "up"
    DOWN = "down"
    RIGHT = "right"
    INSERT = "insert"
    DELETE = "delete"
    STOP = "stop"
    AGAIN = "again"
    PROPS = "props"
    UNDO = "undo"
    FRONT = "front"
    COPY = "copy"
    OPEN = "open"
    PASTE = "paste"
    FIND = "find"
    CUT = "cut"
    LF = "lf"
    HELP = "help"
    META_L = "meta_l"
    META_R = "meta_r"
    COMPOSE = "compose"
    PAUSE = "pause"
    RO = "ro"
    HIRAGANA = "hiragana"
    HENKAN = "henkan"
    YEN = "yen"
    MUHENKAN = "muhenkan"
    KATAKANAHIRAGANA = "katakanahiragana"
    KP_COMMA = "kp_comma"
    KP_EQUALS = "kp_equals"
    POWER = "power"
    SLEEP = "sleep"
    WAKE = "wake"
    AUDIONEXT = "audionext"
    AUDIOPREV = "audioprev"
    AUDIOSTOP = "audiostop"
    AUDIOPLAY = "audioplay"
    AUDIOMUTE = "audiomute"
    VOLUMEUP = "volumeup"
    VOLUMEDOWN = "volumedown"
    MEDIASELECT = "mediaselect"
    MAIL = "mail"
    CALCULATOR = "calculator"
    COMPUTER = "computer"
    AC_HOME = "ac_home"
    AC_BACK = "ac_back"
    AC_FORWARD = "ac_forward"
    AC_REFRESH = "ac_refresh"
    AC_BOOKMARKS = "ac_bookmarks"
    LANG1 = "lang1"
    LANG2 = "lang2"


class KeyValueKind(StrEnum):
    """qapi/ui.json ``KeyValueKind``."""

    NUMBER = "number"
    QCODE = "qcode"


@dataclass(frozen=True, slots=True)
class KeyValue:
    """qapi/ui.json ``KeyValue``: the union's base."""

    type: KeyValueKind


@dataclass(frozen=True, slots=True)
class IntWrapper(KeyValue):
    """qapi/ui.json ``IntWrapper``: a key by its number (a PS/2 set 1 scancode, QEMU's
    ``qcode`` of ``qemu_input_key_number_to_qcode``)."""

    data: int


@dataclass(frozen=True, slots=True)
class QKeyCodeWrapper(KeyValue):
    """qapi/ui.json ``QKeyCodeWrapper``: a key by its name."""

    data: QKeyCode


AnyKeyValue = Annotated[
    KeyValue,
    Variants("type", {KeyValueKind.NUMBER: IntWrapper, KeyValueKind.QCODE: QKeyCodeWrapper}),
]
"""The ``KeyValue`` union as ``send-key`` declares it."""


class ImageFormat(StrEnum):
    """qapi/ui.json ``ImageFormat``."""

    PPM = "ppm"
    PNG = "png"


NO_CONSOLE: Final = "There is no console to take a screendump from"
HEAD_WITHOUT_DEVICE: Final = "'head' must be specified together with 'device'"

_HEX_DIGITS: Final = frozenset(string.hexdigits)
_KEY_NAMES: Final = frozenset(key.value for key in QKeyCode)
_FORMAT_NAMES: Final = frozenset(image_format.value for image_format in ImageFormat)


def parse_sendkey_keys(keys: str) -> list[KeyValue] | str:
    """``hmp_sendkey``'s reading of ``keys`` (monitor/hmp-cmds.c): names joined by ``-``, each a
    ``QKeyCode`` name (exact case, ``<`` for ``less``) or ``0x`` and hex digits, which
    ``strtoul`` must read to the name's end. The keys, or the name that is neither (QEMU prints
    ``invalid parameter: NAME`` and sends nothing)."""
    parsed: list[KeyValue] = []
    for name in keys.split("-"):
        if name == "<":
            name = "less"
        if name.startswith("0x"):
            digits = name[2:]
            if not digits or not _HEX_DIGITS.issuperset(digits):
                return name
            # strtoul's unsigned long (ULONG_MAX when larger), stored in hmp_sendkey's int
            value = min(int(digits, 16), 2**64 - 1) & 0xFFFFFFFF
            parsed.append(IntWrapper(KeyValueKind.NUMBER, value - (value >> 31 << 32)))
            continue
        if name not in _KEY_NAMES:
            return name
        parsed.append(QKeyCodeWrapper(KeyValueKind.QCODE, QKeyCode(name)))
    return parsed


def complete_key_names() -> list[str]:
    """``sendkey_completion`` (monitor/misc.c): every key name (the word after the last ``-``
    is completed, :attr:`HumanSyntax.subword_separators`)."""
    return [key.value for key in QKeyCode]


def register_ui(monitor: Monitor, config: MachineConfig) -> None:
    """Register ``send-key``, ``screendump`` and their HMP commands for ``config``'s machine."""
    command = monitor.command
    device_ids = frozenset(device.id for device in config.devices if device.id is not None)

    @command(name="send-key")
    def send_key(keys: list[AnyKeyValue], hold_time: int | None = None) -> None:
        """Send keys to the guest, as if pressed together (held ``hold-time`` ms, default 100).

        An empty list, any number and a negative hold time are taken, as by QEMU (see the
        module docstring: the simulated guest has no keyboard driver).
        """

    @command(
        name="hmp-sendkey",
        qmp=False,
        hmp=HumanSyntax(
            name="sendkey",
            args_type="keys:s,hold-time:i?",
            params="keys [hold_ms]",
            help="send keys to the VM (e.g. 'sendkey ctrl-alt-f1', default hold time=100 ms)",
            completers={"keys": complete_key_names},
            subword_separators={"keys": "-"},
        ),
    )
    def sendkey(keys: str, hold_time: int | None = None) -> str:
        """``hmp_sendkey``: QEMU prints (not an error) ``invalid parameter: NAME`` for a name
        that is no key, and sends none of the keys."""
        parsed = parse_sendkey_keys(keys)
        if isinstance(parsed, str):
            return f"invalid parameter: {parsed}\n"
        send_key(parsed, hold_time)
        return ""

    @command(name="screendump")
    def screendump(
        filename: str,
        device: str | None = None,
        head: int | None = None,
        format: ImageFormat | None = None,  # QAPI's member name
    ) -> None:
        """Write a screenshot of a console to ``filename`` (none: the machine has no display).

        Checked in ui/console.c ``qmp_screendump``'s order: a ``device`` that no ``-device``
        has as id (DeviceNotFound), one that is no display
        (``qemu_console_lookup_by_device_name``, ``head`` read as QEMU's ``uint32_t`` and
        printed with ``%d``); without ``device``, a ``head`` is refused, then there is no
        console 0. Nothing is written in any case.
        """
        if device is not None:
            if device not in device_ids:
                raise QMPError(f"Device '{device}' not found", ErrorClass.DEVICE_NOT_FOUND)
            head_number = (head or 0) & 0xFFFFFFFF
            head_number -= head_number >> 31 << 32
            raise QMPError(f"Device {device} (head {head_number}) is not bound to a QemuConsole")
        if head is not None:
            raise QMPError(HEAD_WITHOUT_DEVICE)
        raise QMPError(NO_CONSOLE)

    @command(
        name="hmp-screendump",
        qmp=False,
        hmp=HumanSyntax(
            name="screendump",
            args_type="filename:F,format:-fs,device:s?,head:i?",
            params="filename [-f format] [device [head]]",
            help="save screen from head 'head' of display device 'device'"
            "in specified format 'format' as image 'filename'."
            "Currently only 'png' and 'ppm' formats are supported.",
        ),
    )
    def hmp_screendump(
        filename: str,
        format: str | None = None,  # the args_type key
        device: str | None = None,
        head: int | None = None,
    ) -> None:
        """``hmp_screendump``: the format is read by ``qapi_enum_parse`` (its own error text),
        and ``head`` is passed (0 by default) exactly when ``device`` is."""
        image_format = None
        if format is not None:
            if format not in _FORMAT_NAMES:
                raise QMPError(f"invalid parameter value: {format}")
            image_format = ImageFormat(format)
        screendump(filename, device, (head or 0) if device is not None else None, image_format)
