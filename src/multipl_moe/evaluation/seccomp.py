"""A seccomp filter for the sandbox, compiled by libseccomp and handed to bwrap (`--seccomp FD`).

The filter allows everything by default and refuses the calls no benchmark program needs but an
attacker would use to reach the kernel's less-exercised corners or to step outside the sandbox:
io_uring, the key store, bpf, perf events, userfaultfd, ptrace and access to other processes'
memory, mounting and every namespace call (clone with a CLONE_NEW* flag, unshare, setns),
kernel modules, kexec and reboot. A refused call fails with EPERM (clone3 with ENOSYS: its flags
sit in memory a filter cannot read, and ENOSYS makes libc fall back to clone, whose flags the
filter checks). Calls of a foreign ABI (i386 or x32 on x86-64) kill the process, libseccomp's
default, so that the filter cannot be sidestepped through another syscall table.

libseccomp (the library behind Docker's, podman's and systemd's filters) resolves syscall numbers
per architecture and writes the BPF. It is reached through ctypes rather than a Python binding:
its official bindings are packaged only for the system Python (Debian's python3-seccomp), and
the ctypes binding on PyPI (pyseccomp 0.1.2) has not been released since 2021. The six C
functions used here have been stable since libseccomp 2.2.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import functools
import os

_ACT_ALLOW = 0x7FFF0000
_CMP_MASKED_EQ = 7

# Flags of clone(2) that create a namespace. CLONE_NEWTIME (0x80) is left out: in clone(2)
# that bit belongs to the exit signal, and unshare (which it is valid for) is refused whole.
CLONE_NEW_FLAGS = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000,
                   "CLONE_NEWUTS": 0x04000000, "CLONE_NEWIPC": 0x08000000,
                   "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
                   "CLONE_NEWNET": 0x40000000}

DENIED = (
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick", "mount_setattr",
    "unshare", "setns",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
)
# Refused with ENOSYS so that libc falls back to clone(2), which the filter can inspect.
ENOSYS_CALLS = ("clone3",)


class SeccompUnavailable(RuntimeError):
    """libseccomp cannot be loaded or refused to build the filter."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise SeccompUnavailable(f"libseccomp is not installed ({e}); install libseccomp2") from e
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def syscall_number(name: str) -> int | None:
    """The native number of a syscall, or None where this architecture (or libseccomp) has none."""
    nr = _lib().seccomp_syscall_resolve_name(name.encode())
    return nr if nr >= 0 else None


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def filter_bpf(errno: int | None = None) -> bytes:
    """The compiled filter (a `struct sock_filter` array, what `bwrap --seccomp` reads).
    `errno` replaces EPERM as the refusals' error code: tests use an unusual one to tell a
    refusal by the filter from the kernel's own EPERM. clone3 keeps ENOSYS, or libc would not
    fall back to clone and no thread could start."""
    lib = _lib()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        def deny(name: str, code: int, *conds: _ArgCmp) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:   # not a syscall of this architecture, or newer than this libseccomp
                return
            arr = (_ArgCmp * len(conds))(*conds) if conds else None
            rc = lib.seccomp_rule_add_array(ctx, _errno_action(code), nr, len(conds), arr)
            if rc < 0:
                raise SeccompUnavailable(f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")

        for name in DENIED:
            deny(name, errno or _errno.EPERM)
        for name in ENOSYS_CALLS:
            deny(name, _errno.ENOSYS)
        # One rule per flag: within a rule conditions are ANDed, and "any of these bits" is an OR.
        for flag in CLONE_NEW_FLAGS.values():
            deny("clone", errno or _errno.EPERM, _ArgCmp(0, _CMP_MASKED_EQ, flag, flag))

        fd = os.memfd_create("seccomp-bpf")
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
