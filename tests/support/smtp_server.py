#!/usr/bin/env python3
"""Scriptable test SMTP server for the Rust integration tests (Python 3.11, aiosmtpd 1.4.6).

Usage:
  smtp_server.py --maildir DIR [--host 127.0.0.1] [--port 0]
                 [--starttls CERT KEY [--require-starttls] | --implicit-tls CERT KEY]
                 [--auth USER:PASS] [--fail-data N] [--drop-after-data N]

Once listening it prints exactly "READY <port>\\n" on stdout (then flushes); every
reply is logged to stderr (drain it or let it inherit: a full pipe blocks the
server). It stops cleanly on SIGTERM/SIGINT. Use an IP literal for --host: a name
such as "localhost" may bind IPv4 and IPv6 sockets on *different* ports with --port 0.

Each accepted message is stored as DIR/NNNNNN.eml (raw bytes as received, CRLF
kept) and DIR/NNNNNN.json ({"mail_from", "rcpt_tos", "tls", "auth_user",
"received_at"}). Both are written to a temp name, fsynced, then renamed, the
.json last: once a reader sees the .json, the .eml is complete. Numbering
continues after the highest number already in DIR.

Scripted behaviour:
  RCPT to local part "reject*"   -> 550 5.1.1 <addr>: Recipient address rejected: user unknown
  RCPT to local part "tempfail*" -> 451 4.3.0 <addr>: temporarily deferred, try again later
  --fail-data N       the first N DATA transactions (process-wide) end with
                      451 4.3.2 Service busy, try again later; nothing is stored
  --drop-after-data N the first N messages are stored, then the connection is
                      cut before the 250 reply is sent
  --auth USER:PASS    AUTH PLAIN/LOGIN required (plain connections allowed);
                      bad credentials -> 535 5.7.8, MAIL without AUTH -> 530
"""

import argparse
import asyncio
import base64
import email
import email.policy
import json
import logging
import os
import re
import signal
import ssl
import sys
import warnings
from datetime import datetime, timezone

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

log = logging.getLogger("smtp_server")
NAME_RE = re.compile(r"^(\d+)\.(?:eml|json)$")


def parse_message(raw):
    """The message as a reader sees it (decoded headers and parts), so tests in any
    language can assert on it without a MIME parser of their own."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        parts.append({
            "content_type": part.get_content_type(),
            "charset": part.get_content_charset(),
            "transfer_encoding": part.get("Content-Transfer-Encoding"),
            "content": part.get_content() if part.get_content_maintype() == "text" else None,
            # Images and attachments: how they are referenced, and their bytes.
            "content_id": part.get("Content-ID"),
            "disposition": part.get_content_disposition(),
            "filename": part.get_filename(),
            "data_b64": None if part.get_content_maintype() == "text"
            else base64.b64encode(part.get_payload(decode=True) or b"").decode("ascii"),
        })
    return {
        "subject": str(msg.get("Subject", "")),
        "from": str(msg.get("From", "")),
        "to": str(msg.get("To", "")),
        "reply_to": str(msg.get("Reply-To", "")),
        "message_id": str(msg.get("Message-ID", "")),
        "date": str(msg.get("Date", "")),
        "content_type": msg.get_content_type(),
        "headers": {k: str(v) for k, v in msg.items()},
        "parts": parts,
    }


def write_atomic(path, data):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Handler:
    def __init__(self, args):
        self.maildir = args.maildir
        self.auth = args.auth  # (user, password) or None
        self.fail_data_left = args.fail_data
        self.drop_left = args.drop_after_data
        os.makedirs(self.maildir, exist_ok=True)
        numbers = [int(m.group(1)) for m in map(NAME_RE.match, os.listdir(self.maildir)) if m]
        self.counter = max(numbers, default=0)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.auth is None:  # do not advertise AUTH unless --auth was given
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        log.info("EHLO %s: %s", hostname, " ".join(r[4:] for r in responses[1:]))
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        log.info("MAIL FROM:<%s>%s", address, "".join(" " + o for o in mail_options))
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.rsplit("@", 1)[0].lower()
        if local.startswith("reject"):
            status = f"550 5.1.1 <{address}>: Recipient address rejected: user unknown"
        elif local.startswith("tempfail"):
            status = f"451 4.3.0 <{address}>: temporarily deferred, try again later"
        else:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            status = "250 OK"
        log.info("RCPT TO:<%s>", address)
        return status

    async def handle_DATA(self, server, session, envelope):
        if self.fail_data_left > 0:
            self.fail_data_left -= 1
            log.info("DATA %d bytes: scripted failure", len(envelope.original_content))
            return "451 4.3.2 Service busy, try again later"
        self.counter += 1
        base = os.path.join(self.maildir, f"{self.counter:06d}")
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            # ssl_object exists both for implicit TLS and after STARTTLS
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "auth_user": session.auth_data if session.authenticated else None,
            "received_at": datetime.now(timezone.utc).isoformat(),
            "parsed": parse_message(envelope.original_content),
        }
        write_atomic(base + ".eml", envelope.original_content)
        write_atomic(base + ".json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
        dir_fd = os.open(self.maildir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the renames durable too
        finally:
            os.close(dir_fd)
        if self.drop_left > 0:
            self.drop_left -= 1
            log.info("DATA stored %s.eml: dropping connection (scripted)", base)
            # Cut the connection without sending the reply. Cancelling the
            # session task makes aiosmtpd skip its push() of our status.
            server.transport.abort()
            raise asyncio.CancelledError()
        log.info("DATA stored %s.eml", base)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and (auth_data.login, auth_data.password)
              == (self.auth[0].encode(), self.auth[1].encode()))
        login = getattr(auth_data, "login", b"").decode("utf-8", "replace")
        log.info("AUTH %s user=%r: %s", mechanism, login, "ok" if ok else "bad credentials")
        # handled=False: aiosmtpd replies 235 / 535 5.7.8 itself
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


class LoggingSMTP(SMTP):
    """SMTP that logs every reply it sends (the result of each command)."""

    async def push(self, status):
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        if text[3:4] != "-":  # skip multi-line continuations (EHLO list is logged by the hook)
            peer = self.session.peer if self.session else None
            log.info("[%s] %s", peer[1] if peer else "?", text)
        await super().push(status)


def tls_context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def parse_args():
    p = argparse.ArgumentParser(description="Scriptable test SMTP server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--maildir", required=True)
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    tls.add_argument("--implicit-tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--auth", metavar="USER:PASS")
    p.add_argument("--fail-data", type=int, default=0, metavar="N")
    p.add_argument("--drop-after-data", type=int, default=0, metavar="N")
    args = p.parse_args()
    if args.require_starttls and not args.starttls:
        p.error("--require-starttls needs --starttls CERT KEY")
    if args.auth is not None:
        if ":" not in args.auth:
            p.error("--auth expects USER:PASS")
        args.auth = tuple(args.auth.split(":", 1))
    return args


async def main(args):
    handler = Handler(args)
    starttls_ctx = tls_context(*args.starttls) if args.starttls else None
    implicit_ctx = tls_context(*args.implicit_tls) if args.implicit_tls else None

    def factory():
        return LoggingSMTP(
            handler,
            hostname="localhost",
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=starttls_ctx,
            require_starttls=args.require_starttls,
            auth_required=args.auth is not None,
            auth_require_tls=False,
            authenticator=handler.authenticate if args.auth else None,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, args.host, args.port, ssl=implicit_ctx)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()
    log.info("listening on %s:%d", args.host, port)
    await stop.wait()
    log.info("shutting down")
    server.close()
    # do not await server.wait_closed(): in 3.12+ it waits for open client connections


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="smtp_server: %(message)s")
    log.setLevel(logging.INFO)
    # aiosmtpd warns loudly about auth_required without TLS; that is intended here
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    asyncio.run(main(parse_args()))
