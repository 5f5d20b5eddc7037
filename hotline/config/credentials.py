"""Reading credentials: the AMI secret, the database password and the pseudonym key file
(docs/security.md, "Secrets" and "Credential files").

- A credential file must be private to the daemon's user: one that its group or other users may
  read or write (by its mode bits or by a POSIX ACL) is refused, never fixed, because what it
  holds may already have been read; the message names the file, its mode and what to do.
- A secret is printable ASCII without whitespace (0x21 to 0x7e): a line break would end an AMI
  header early and start another, and bytes Asterisk would read differently from hotline make
  failures no one can explain. One trailing line break of a file is not part of the secret.
- Messages name the source (the setting, the file or the environment variable), never the value.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from hotline.config.problems import ConfigError

# Large enough for a key file with years of rotated keys; a secret is a line.
_MAX_BYTES = 1 << 20
# The access that matters for a credential: reading it, or replacing it.
_READ, _WRITE = 4, 2
_ACCESS = _READ | _WRITE
# The POSIX ACL of a file, as Linux stores it in an extended attribute (acl/include/acl_ea.h):
# a little-endian version (2), then 8-byte entries (u16 tag, u16 permissions, u32 id).
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def read_private_file(path: Path, where: str) -> bytes:
    """The bytes of the credential file at `path`, once it is known to be private; `where` is the
    setting that names it (e.g. "ami.secret_file"), for messages."""
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as error:
        raise ConfigError([f"{where}: cannot read {path}: {_reason(error)}"]) from None
    try:
        # The checks and the read use the same open file: nothing can be swapped in between.
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError([f"{where}: {path} is not a regular file"])
        others = others_with_access(info.st_mode, _acl_of(fd), os.geteuid())
        if others:
            mode = stat.S_IMODE(info.st_mode)
            raise ConfigError(
                [
                    f"{where}: {path} is open to {' and '.join(others)} (mode {mode:04o}): "
                    f"make it the daemon's user's only (chmod 600 {path}, and remove any ACL "
                    "entry), then replace the secret it holds, which others could read"
                ]
            )
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_BYTES:
                raise ConfigError([f"{where}: {path} is larger than {_MAX_BYTES} bytes"])
        return b"".join(chunks)
    except OSError as error:
        raise ConfigError([f"{where}: cannot read {path}: {_reason(error)}"]) from None
    finally:
        os.close(fd)


def read_secret_file(path: Path, where: str) -> str:
    """A secret from a private file: its one line, without the trailing line break."""
    data = read_private_file(path, where).rstrip(b"\r\n")
    return checked_secret(data, where, str(path))


def read_secret_env(name: str, where: str) -> str:
    """A secret from the environment variable `name`, checked as a file's would be."""
    if os.supports_bytes_environ:
        value = os.environb.get(name.encode())
    else:  # pragma: no cover - POSIX has the bytes environment
        text = os.environ.get(name)
        value = None if text is None else text.encode("utf-8", "surrogateescape")
    if value is None:
        raise ConfigError([f"{where}: environment variable {name} is not set"])
    return checked_secret(value, where, f"environment variable {name}")


def checked_secret(data: bytes, where: str, source: str) -> str:
    """`data` as a secret, or a ConfigError naming `source` and what is wrong, not the value."""
    if not data:
        raise ConfigError([f"{where}: {source} is empty"])
    flaw = secret_flaw(data)
    if flaw is not None:
        raise ConfigError(
            [
                f"{where}: {source} holds {flaw}: a secret must be printable ASCII without "
                "whitespace (0x21 to 0x7e)"
            ]
        )
    return data.decode("ascii")


def secret_flaw(data: bytes) -> str | None:
    """What makes `data` unfit as a secret, in words that do not repeat it; None if nothing."""
    for byte in data:
        if 0x21 <= byte <= 0x7E:
            continue
        if byte in b"\r\n":
            return "a line break"
        if byte in b" \t":
            return "whitespace"
        if byte < 0x20 or byte == 0x7F:
            return "a control character"
        return "a byte that is not ASCII"
    return None


def others_with_access(mode: int, acl: bytes | None, me: int) -> list[str]:
    """Who, besides the file's owner, the daemon's user (`me`) and root, may read or write a file
    with `mode` and the POSIX ACL `acl` (the extended attribute's bytes; None without one). With
    an ACL, the group bits of the mode are its mask, not the owning group's permissions."""
    if acl is None:
        found = []
        if mode & (_ACCESS << 3):
            found.append("its group")
        if mode & _ACCESS:
            found.append("other users")
        return found
    entries = _acl_entries(acl)
    if entries is None:
        return ["whoever its ACL names (an ACL hotline cannot read)"]
    mask = next((perm for tag, perm, _ in entries if tag == _MASK), 0o7)
    found = []
    for tag, perm, ident in entries:
        if tag == _USER and ident not in (me, 0) and perm & mask & _ACCESS:
            found.append(f"user {ident}")
        elif tag == _GROUP_OBJ and perm & mask & _ACCESS:
            found.append("its group")
        elif tag == _GROUP and perm & mask & _ACCESS:
            found.append(f"group {ident}")
        elif tag == _OTHER and perm & _ACCESS:
            found.append("other users")
    return found


def _acl_entries(acl: bytes) -> list[tuple[int, int, int]] | None:
    if len(acl) < 4 or (len(acl) - 4) % 8 or int.from_bytes(acl[:4], "little") != _ACL_VERSION:
        return None
    entries = []
    for at in range(4, len(acl), 8):
        tag = int.from_bytes(acl[at : at + 2], "little")
        perm = int.from_bytes(acl[at + 2 : at + 4], "little")
        ident = int.from_bytes(acl[at + 4 : at + 8], "little")
        if tag not in (_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER):
            return None
        entries.append((tag, perm, ident))
    return entries


def _acl_of(fd: int) -> bytes | None:
    """The file's POSIX access ACL, or None when it has none (or the system has no ACLs)."""
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:  # pragma: no cover - Linux has extended attributes
        return None
    try:
        acl: bytes = getxattr(fd, _ACL_XATTR)
    except OSError as error:
        if error.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    return acl


def _reason(error: OSError) -> str:
    return error.strerror or type(error).__name__
