"""QEMU 7.2's ``-object`` members by ``qom-type`` (qapi/qom.json ``ObjectOptions``).

Written by ``tools/qom_members.py`` from QEMU 7.2's qapi/*.json (the v7.2.11 stable
sources, Linux x86_64 build conditions); do not edit. tests/test_objects_qemu.py holds it
against the installed QEMU's ``query-qmp-schema``. Each variant's members are in QEMU's
visiting order, its base's first; :func:`qmonitor.cmdline.qapi.visit_struct` reads an option
against them. The types without a variant (``can-bus``, ``pef-guest``, ``s390-pv-guest``)
take no members beyond ``qom-type`` and ``id`` and are absent.
"""

from __future__ import annotations

from typing import Final

from qmonitor.cmdline.qapi import UNMODELLED, ListOf, Members, StructOf

AUTH_Z_LIST_PROPERTIES: Final[Members] = (
    ("policy", ("deny", "allow"), False),
    ("rules", UNMODELLED, False),
)
AUTH_Z_LIST_FILE_PROPERTIES: Final[Members] = (
    ("filename", "str", True),
    ("refresh", "bool", False),
)
AUTH_ZPAM_PROPERTIES: Final[Members] = (("service", "str", True),)
AUTH_Z_SIMPLE_PROPERTIES: Final[Members] = (("identity", "str", True),)
CAN_HOST_SOCKETCAN_PROPERTIES: Final[Members] = (
    ("if", "str", True),
    ("canbus", "str", True),
)
COLO_COMPARE_PROPERTIES: Final[Members] = (
    ("primary_in", "str", True),
    ("secondary_in", "str", True),
    ("outdev", "str", True),
    ("iothread", "str", True),
    ("notify_dev", "str", False),
    ("compare_timeout", "uint64", False),
    ("expired_scan_cycle", "uint32", False),
    ("max_queue_size", "uint32", False),
    ("vnet_hdr_support", "bool", False),
)
CRYPTODEV_BACKEND_PROPERTIES: Final[Members] = (("queues", "uint32", False),)
CRYPTODEV_VHOST_USER_PROPERTIES: Final[Members] = (
    *CRYPTODEV_BACKEND_PROPERTIES,
    ("chardev", "str", True),
)
D_BUS_VM_STATE_PROPERTIES: Final[Members] = (
    ("addr", "str", True),
    ("id-list", "str", False),
)
NETFILTER_PROPERTIES: Final[Members] = (
    ("netdev", "str", True),
    ("queue", ("all", "rx", "tx"), False),
    ("status", "str", False),
    ("position", "str", False),
    ("insert", ("before", "behind"), False),
)
FILTER_BUFFER_PROPERTIES: Final[Members] = (
    *NETFILTER_PROPERTIES,
    ("interval", "uint32", True),
)
FILTER_DUMP_PROPERTIES: Final[Members] = (
    *NETFILTER_PROPERTIES,
    ("file", "str", True),
    ("maxlen", "uint32", False),
)
FILTER_MIRROR_PROPERTIES: Final[Members] = (
    *NETFILTER_PROPERTIES,
    ("outdev", "str", True),
    ("vnet_hdr_support", "bool", False),
)
FILTER_REDIRECTOR_PROPERTIES: Final[Members] = (
    *NETFILTER_PROPERTIES,
    ("indev", "str", False),
    ("outdev", "str", False),
    ("vnet_hdr_support", "bool", False),
)
FILTER_REWRITER_PROPERTIES: Final[Members] = (
    *NETFILTER_PROPERTIES,
    ("vnet_hdr_support", "bool", False),
)
INPUT_BARRIER_PROPERTIES: Final[Members] = (
    ("name", "str", True),
    ("server", "str", False),
    ("port", "str", False),
    ("x-origin", "str", False),
    ("y-origin", "str", False),
    ("width", "str", False),
    ("height", "str", False),
)
INPUT_LINUX_PROPERTIES: Final[Members] = (
    ("evdev", "str", True),
    ("grab_all", "bool", False),
    ("repeat", "bool", False),
    (
        "grab-toggle",
        ("ctrl-ctrl", "alt-alt", "shift-shift", "meta-meta", "scrolllock", "ctrl-scrolllock"),
        False,
    ),
)
EVENT_LOOP_BASE_PROPERTIES: Final[Members] = (
    ("aio-max-batch", "int", False),
    ("thread-pool-min", "int", False),
    ("thread-pool-max", "int", False),
)
IOTHREAD_PROPERTIES: Final[Members] = (
    *EVENT_LOOP_BASE_PROPERTIES,
    ("poll-max-ns", "int", False),
    ("poll-grow", "int", False),
    ("poll-shrink", "int", False),
)
MAIN_LOOP_PROPERTIES: Final[Members] = (*EVENT_LOOP_BASE_PROPERTIES,)
MEMORY_BACKEND_PROPERTIES: Final[Members] = (
    ("dump", "bool", False),
    ("host-nodes", ListOf("uint16"), False),
    ("merge", "bool", False),
    ("policy", ("default", "preferred", "bind", "interleave"), False),
    ("prealloc", "bool", False),
    ("prealloc-threads", "uint32", False),
    ("prealloc-context", "str", False),
    ("share", "bool", False),
    ("reserve", "bool", False),
    ("size", "size", True),
    ("x-use-canonical-path-for-ramblock-id", "bool", False),
)
MEMORY_BACKEND_EPC_PROPERTIES: Final[Members] = (*MEMORY_BACKEND_PROPERTIES,)
MEMORY_BACKEND_FILE_PROPERTIES: Final[Members] = (
    *MEMORY_BACKEND_PROPERTIES,
    ("align", "size", False),
    ("discard-data", "bool", False),
    ("mem-path", "str", True),
    ("pmem", "bool", False),
    ("readonly", "bool", False),
)
MEMORY_BACKEND_MEMFD_PROPERTIES: Final[Members] = (
    *MEMORY_BACKEND_PROPERTIES,
    ("hugetlb", "bool", False),
    ("hugetlbsize", "size", False),
    ("seal", "bool", False),
)
PR_MANAGER_HELPER_PROPERTIES: Final[Members] = (("path", "str", True),)
QTEST_PROPERTIES: Final[Members] = (
    ("chardev", "str", True),
    ("log", "str", False),
)
RNG_PROPERTIES: Final[Members] = (("opened", "bool", False),)
RNG_EGD_PROPERTIES: Final[Members] = (
    *RNG_PROPERTIES,
    ("chardev", "str", True),
)
RNG_RANDOM_PROPERTIES: Final[Members] = (
    *RNG_PROPERTIES,
    ("filename", "str", False),
)
SECRET_COMMON_PROPERTIES: Final[Members] = (
    ("loaded", "bool", False),
    ("format", ("raw", "base64"), False),
    ("keyid", "str", False),
    ("iv", "str", False),
)
SECRET_PROPERTIES: Final[Members] = (
    *SECRET_COMMON_PROPERTIES,
    ("data", "str", False),
    ("file", "str", False),
)
SECRET_KEYRING_PROPERTIES: Final[Members] = (
    *SECRET_COMMON_PROPERTIES,
    ("serial", "int32", True),
)
SEV_GUEST_PROPERTIES: Final[Members] = (
    ("sev-device", "str", False),
    ("dh-cert-file", "str", False),
    ("session-file", "str", False),
    ("policy", "uint32", False),
    ("handle", "uint32", False),
    ("cbitpos", "uint32", False),
    ("reduced-phys-bits", "uint32", True),
    ("kernel-hashes", "bool", False),
)
THREAD_CONTEXT_PROPERTIES: Final[Members] = (
    ("cpu-affinity", ListOf("uint16"), False),
    ("node-affinity", ListOf("uint16"), False),
)
THROTTLE_LIMITS: Final[Members] = (
    ("iops-total", "int", False),
    ("iops-total-max", "int", False),
    ("iops-total-max-length", "int", False),
    ("iops-read", "int", False),
    ("iops-read-max", "int", False),
    ("iops-read-max-length", "int", False),
    ("iops-write", "int", False),
    ("iops-write-max", "int", False),
    ("iops-write-max-length", "int", False),
    ("bps-total", "int", False),
    ("bps-total-max", "int", False),
    ("bps-total-max-length", "int", False),
    ("bps-read", "int", False),
    ("bps-read-max", "int", False),
    ("bps-read-max-length", "int", False),
    ("bps-write", "int", False),
    ("bps-write-max", "int", False),
    ("bps-write-max-length", "int", False),
    ("iops-size", "int", False),
)
THROTTLE_GROUP_PROPERTIES: Final[Members] = (
    ("limits", StructOf(THROTTLE_LIMITS), False),
    ("x-iops-total", "int", False),
    ("x-iops-total-max", "int", False),
    ("x-iops-total-max-length", "int", False),
    ("x-iops-read", "int", False),
    ("x-iops-read-max", "int", False),
    ("x-iops-read-max-length", "int", False),
    ("x-iops-write", "int", False),
    ("x-iops-write-max", "int", False),
    ("x-iops-write-max-length", "int", False),
    ("x-bps-total", "int", False),
    ("x-bps-total-max", "int", False),
    ("x-bps-total-max-length", "int", False),
    ("x-bps-read", "int", False),
    ("x-bps-read-max", "int", False),
    ("x-bps-read-max-length", "int", False),
    ("x-bps-write", "int", False),
    ("x-bps-write-max", "int", False),
    ("x-bps-write-max-length", "int", False),
    ("x-iops-size", "int", False),
)
TLS_CREDS_PROPERTIES: Final[Members] = (
    ("verify-peer", "bool", False),
    ("dir", "str", False),
    ("endpoint", ("client", "server"), False),
    ("priority", "str", False),
)
TLS_CREDS_ANON_PROPERTIES: Final[Members] = (
    *TLS_CREDS_PROPERTIES,
    ("loaded", "bool", False),
)
TLS_CREDS_PSK_PROPERTIES: Final[Members] = (
    *TLS_CREDS_PROPERTIES,
    ("loaded", "bool", False),
    ("username", "str", False),
)
TLS_CREDS_X509_PROPERTIES: Final[Members] = (
    *TLS_CREDS_PROPERTIES,
    ("loaded", "bool", False),
    ("sanity-check", "bool", False),
    ("passwordid", "str", False),
)
REMOTE_OBJECT_PROPERTIES: Final[Members] = (
    ("fd", "str", True),
    ("devid", "str", True),
)
VFIO_USER_SERVER_PROPERTIES: Final[Members] = (
    ("socket", UNMODELLED, True),
    ("device", "str", True),
)

OBJECT_MEMBERS: Final[dict[str, Members]] = {
    "authz-list": AUTH_Z_LIST_PROPERTIES,
    "authz-listfile": AUTH_Z_LIST_FILE_PROPERTIES,
    "authz-pam": AUTH_ZPAM_PROPERTIES,
    "authz-simple": AUTH_Z_SIMPLE_PROPERTIES,
    "can-host-socketcan": CAN_HOST_SOCKETCAN_PROPERTIES,
    "colo-compare": COLO_COMPARE_PROPERTIES,
    "cryptodev-backend": CRYPTODEV_BACKEND_PROPERTIES,
    "cryptodev-backend-builtin": CRYPTODEV_BACKEND_PROPERTIES,
    "cryptodev-backend-lkcf": CRYPTODEV_BACKEND_PROPERTIES,
    "cryptodev-vhost-user": CRYPTODEV_VHOST_USER_PROPERTIES,
    "dbus-vmstate": D_BUS_VM_STATE_PROPERTIES,
    "filter-buffer": FILTER_BUFFER_PROPERTIES,
    "filter-dump": FILTER_DUMP_PROPERTIES,
    "filter-mirror": FILTER_MIRROR_PROPERTIES,
    "filter-redirector": FILTER_REDIRECTOR_PROPERTIES,
    "filter-replay": NETFILTER_PROPERTIES,
    "filter-rewriter": FILTER_REWRITER_PROPERTIES,
    "input-barrier": INPUT_BARRIER_PROPERTIES,
    "input-linux": INPUT_LINUX_PROPERTIES,
    "iothread": IOTHREAD_PROPERTIES,
    "main-loop": MAIN_LOOP_PROPERTIES,
    "memory-backend-epc": MEMORY_BACKEND_EPC_PROPERTIES,
    "memory-backend-file": MEMORY_BACKEND_FILE_PROPERTIES,
    "memory-backend-memfd": MEMORY_BACKEND_MEMFD_PROPERTIES,
    "memory-backend-ram": MEMORY_BACKEND_PROPERTIES,
    "pr-manager-helper": PR_MANAGER_HELPER_PROPERTIES,
    "qtest": QTEST_PROPERTIES,
    "rng-builtin": RNG_PROPERTIES,
    "rng-egd": RNG_EGD_PROPERTIES,
    "rng-random": RNG_RANDOM_PROPERTIES,
    "secret": SECRET_PROPERTIES,
    "secret_keyring": SECRET_KEYRING_PROPERTIES,
    "sev-guest": SEV_GUEST_PROPERTIES,
    "thread-context": THREAD_CONTEXT_PROPERTIES,
    "throttle-group": THROTTLE_GROUP_PROPERTIES,
    "tls-creds-anon": TLS_CREDS_ANON_PROPERTIES,
    "tls-creds-psk": TLS_CREDS_PSK_PROPERTIES,
    "tls-creds-x509": TLS_CREDS_X509_PROPERTIES,
    "tls-cipher-suites": TLS_CREDS_PROPERTIES,
    "x-remote-object": REMOTE_OBJECT_PROPERTIES,
    "x-vfio-user-server": VFIO_USER_SERVER_PROPERTIES,
}
