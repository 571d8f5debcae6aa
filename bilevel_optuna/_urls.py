"""URL helpers shared by the chat backends, the storage and the CLI.

Written here rather than taken from a library: ``urllib.parse`` does the parsing, and what is
left (which hosts count as this machine, masking a password) is a few lines that every URL the
package shows must go through, so it is kept in one place.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

#: What a password is replaced with in a URL shown to a user (SQLAlchemy writes the same).
MASK = "***"
# Query keys that carry a password (libpq's ``password``, MySQL drivers' ``passwd``).
_PASSWORD_KEYS = ("password", "passwd")


def is_loopback(address: str) -> bool:
    """Whether ``address`` (a host name, an IP address or a URL) names this machine only.

    ``localhost``, ``127.0.0.0/8`` and ``::1`` (bracketed or not) are loopback; every other
    name is not, since it may resolve to another machine.
    """
    if "://" in address:
        host = urllib.parse.urlsplit(address).hostname or ""
    else:
        host = address.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hide_password(url: str) -> str:
    """``url`` with its password masked: ``postgresql://user:***@host/db``, also in the query.

    Works for database URLs (``dialect+driver://``) and HTTP base URLs alike; a string that is
    not a URL (a journal file's path) has nothing to hide and is returned as is. A URL that does
    not parse shows its scheme only, so that no part of a secret can leak.
    """
    if "://" not in url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return url.split(":", 1)[0] + ":..."
    original = parts
    if password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}:{MASK}@{hostinfo}")
    if parts.query:  # libpq and some drivers also take the password as ?password=...
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if any(key.lower() in _PASSWORD_KEYS for key, _ in pairs):
            masked = [(k, MASK if k.lower() in _PASSWORD_KEYS else v) for k, v in pairs]
            parts = parts._replace(query=urllib.parse.urlencode(masked, safe="*"))
    return url if parts == original else urllib.parse.urlunsplit(parts)
