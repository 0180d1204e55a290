"""A real SMTP server for Tessera's mail tests (aiosmtpd), started by tests/support/smtp.rs.

Each mail it accepts is written to --maildir as N.json (written whole, then renamed into
place): the envelope, whether the session was under TLS, the user it authenticated as, the
headers and the decoded text and HTML parts. Prints `ready PORT` once it listens.

  --port N                   0: any free port
  --starttls CERT KEY        offer STARTTLS with this certificate, and require it
  --implicit-tls CERT KEY    TLS from the first byte (smtps)
  --auth USER:PASS           offer AUTH and require it (over plain text too: loopback tests)
"""

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import os
import socket
import ssl

from aiosmtpd.smtp import SMTP, AuthResult


def tls_context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


class Sink:
    def __init__(self, maildir):
        self.maildir = maildir
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None
            or (server.transport is not None and server.transport.get_extra_info("ssl_object") is not None),
            "auth_user": session.auth_data if session.authenticated else None,
            "headers": {k.lower(): str(v) for k, v in msg.items()},
            "content_type": msg.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
        }
        n = next(self.counter)
        tmp = os.path.join(self.maildir, f".{n}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.maildir, f"{n:06}.json"))
        return "250 OK"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--maildir", required=True)
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--implicit-tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--auth")
    args = p.parse_args()

    authenticator = None
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == user and auth_data.password.decode() == password
            return AuthResult(success=ok, auth_data=user if ok else None)

    handler = Sink(args.maildir)
    starttls = tls_context(*args.starttls) if args.starttls else None
    implicit = tls_context(*args.implicit_tls) if args.implicit_tls else None

    def factory():
        return SMTP(
            handler,
            hostname="sink.test",
            tls_context=starttls,
            require_starttls=starttls is not None,
            authenticator=authenticator,
            auth_required=authenticator is not None,
            auth_require_tls=False,
        )

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(16)

    async def serve():
        server = await asyncio.get_running_loop().create_server(factory, sock=sock, ssl=implicit)
        print(f"ready {sock.getsockname()[1]}", flush=True)
        await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
