"""An authenticator's code (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps) from an otpauth:// URI, for the
checks that sign an operator in as a person does. Run as a script: `totp_code.py URI [STEP_OFFSET]` prints
the code of the current step (plus the offset: 1 for the next step, which the server also accepts)."""

import base64
import hmac
import struct
import sys
import time
import urllib.parse


def secret_of(uri):
    query = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)
    secret = query["secret"][0].upper()
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def code(uri, offset=0, now=None):
    step = int((time.time() if now is None else now) // 30) + offset
    digest = hmac.new(secret_of(uri), struct.pack(">Q", step), "sha1").digest()
    at = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[at:at + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


if __name__ == "__main__":
    print(code(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0))
